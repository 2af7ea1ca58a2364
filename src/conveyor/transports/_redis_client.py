"""The Redis connection shared by `RedisTransport` and `RedisResultBackend`.

One `RedisClient` per URL and prefix holds the redis-py client, the Lua scripts of `redis.lua`,
an automatic pipeline that sends every command issued in one event-loop turn in one round trip,
and one pub/sub connection that wakes result waiters and workers. Each event loop that uses the
client gets its own connections (a portal thread or `asyncio.run` elsewhere); errors surface as
`BrokerError` / `BrokerConnectionError` naming the URL with its password hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the Redis engine needs the redis extra: pip install 'conveyor[redis]'"
    ) from exc

__all__ = ["RedisClient", "Scripts", "client_for"]

log = logging.getLogger("conveyor.redis")

#: Seconds an idempotent command is retried through a connection failure before it raises.
RETRY_SECONDS = 3.0
_CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


class Scripts:
    """The sections of `redis.lua`, each with the shared prelude, by name."""

    def __init__(self) -> None:
        text = resources.files("conveyor.transports").joinpath("redis.lua").read_text()
        prelude, *sections = text.split("\n--- ")
        self.source: dict[str, str] = {}
        for section in sections:
            name, _, body = section.partition("\n")
            self.source[name.strip()] = f"{prelude}\n{body}"
        self.sha = {
            name: hashlib.sha1(src.encode(), usedforsecurity=False).hexdigest()
            for name, src in self.source.items()
        }


_SCRIPTS: Scripts | None = None


def _scripts() -> Scripts:
    global _SCRIPTS
    if _SCRIPTS is None:
        _SCRIPTS = Scripts()
    return _SCRIPTS


def _safe(url: str) -> str:
    from conveyor.brokers import safe_url

    return safe_url(url)


def _connect(url: str) -> Any:
    """A redis-py asyncio client for a `redis://`, `rediss://`, `unix://`,
    `redis+sentinel://` or `redis+cluster://` URL."""
    options: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 15.0}
    parts = urlsplit(url)
    if parts.scheme == "redis+cluster":
        return RedisCluster.from_url(parts._replace(scheme="redis").geturl(), **options)
    if parts.scheme == "redis+sentinel":
        # redis+sentinel://[:password@]host:port[,host:port]/service[/db]
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ConfigurationError(f"{_safe(url)!r} names no Sentinel service: add /mymaster")
        hosts = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.partition(":")
            hosts.append((host, int(port or 26379)))
        password = unquote(parts.password) if parts.password else None
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts, sentinel_kwargs={"password": password}, **options
        )
        primary = sentinel.master_for(path[0], password=password, db=db)
        primary.conveyor_sentinels = sentinel.sentinels  # closed with the client
        return primary
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"not a Redis URL: {_safe(url)!r}")
    return aioredis.Redis.from_url(url, **options)


def url_options(url: str) -> tuple[str, dict[str, str]]:
    """Split conveyor's own query options (`prefix`, `lease`) off a Redis URL."""
    parts = urlsplit(url)
    ours = {"prefix", "lease"}
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = urlencode([(k, v) for k, v in query if k not in ours])
    return parts._replace(query=kept).geturl(), {k: v for k, v in query if k in ours}


class _Batch:
    """Commands issued in one event-loop turn, sent as one pipeline."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[Any]] = []


class _LoopClient:
    """The connections and the automatic pipeline of one event loop."""

    def __init__(self, owner: RedisClient, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.redis = _connect(owner.url)
        self.batch: _Batch | None = None
        self.flushing: asyncio.Task[None] | None = None
        self.pubsub: Any = None
        self.listener: asyncio.Task[None] | None = None
        self.watchers: dict[bytes, set[Callable[[bytes], None]]] = {}
        # An async generator parked at its `yield`: when the loop ends (`asyncio.run`, a test's
        # loop) it closes the generator, whose `finally` closes these connections in time.
        self.closer = self._close_with_loop()
        loop.create_task(_first_step(self.closer))

    async def _close_with_loop(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.close()
            self.owner.forget(self)

    # -- automatic pipelining -------------------------------------------------------------------

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Queue one command for the next pipeline; the future gets its reply or error."""
        if self.batch is None:
            self.batch = _Batch()
            if self.flushing is None or self.flushing.done():
                self.flushing = self.loop.create_task(self._flush_soon())
        future: asyncio.Future[Any] = self.loop.create_future()
        self.batch.commands.append(command)
        self.batch.futures.append(future)
        return future

    async def _flush_soon(self) -> None:
        while self.batch is not None:
            await asyncio.sleep(0)  # let every caller of this turn add its command
            batch, self.batch = self.batch, None
            if batch is not None:
                await self._send(batch)

    async def _send(self, batch: _Batch) -> None:
        try:
            replies = await self._pipeline_retrying(batch.commands)
        except BaseException as exc:
            _fail_all(batch.futures, self.owner.command_error(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for future, reply in zip(batch.futures, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(self.owner.command_error(reply))
            else:
                future.set_result(reply)

    async def _pipeline_retrying(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send a pipeline, again through connection failures for up to `RETRY_SECONDS`.

        Every script is idempotent (it checks the lease or the id first), so a resend after a
        reply was lost changes nothing.
        """
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                return await self._pipeline(commands)
            except _CONNECTION_ERRORS:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1 and not self.owner.cluster:  # no pipeline object for one command
            try:
                return [await self.redis.execute_command(*commands[0])]
            except redis_errors.NoScriptError:
                await self.owner.load_scripts(self.redis)
                return await self._pipeline(commands)
            except redis_errors.ResponseError as exc:
                return [exc]
        pipe = self.redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis_errors.NoScriptError)]
        if missing:  # a restarted server forgot the scripts: load them and send those again
            await self.owner.load_scripts(self.redis)
            again = await self._pipeline([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    # -- pub/sub ----------------------------------------------------------------------------------

    async def watch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        """Call `callback(channel)` for every message on `channel` until `unwatch`.

        Raises when the subscription cannot be made (Redis is down); call again later.
        """
        if self.pubsub is None:
            self.pubsub = self.redis.pubsub()
        if channel not in self.watchers:
            await self.pubsub.subscribe(channel)
        self.watchers.setdefault(channel, set()).add(callback)
        if self.listener is None or self.listener.done():
            self.listener = self.loop.create_task(self._listen(), name="conveyor-redis-pubsub")

    async def try_watch(self, channel: bytes, callback: Callable[[bytes], None]) -> bool:
        """`watch`, returning False instead of raising when Redis cannot be reached."""
        try:
            await self.watch(channel, callback)
        except Exception:  # redis-py may fail in several ways while its connection drops
            log.debug("could not subscribe to %r", channel, exc_info=True)
            return False
        return True

    async def unwatch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        """Stop calling `callback` for `channel`."""
        callbacks = self.watchers.get(channel)
        if callbacks is None:
            return
        callbacks.discard(callback)
        if not callbacks:
            del self.watchers[channel]
            with contextlib.suppress(*_CONNECTION_ERRORS, redis_errors.RedisError):
                await self.pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                failures = 0
            except Exception:  # any failure of the connection: keep listening
                failures += 1  # pub/sub reconnects and resubscribes on the next read
                log.debug("pub/sub connection lost (%d)", failures, exc_info=True)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            for callback in list(self.watchers.get(channel, ())):
                callback(message["data"])

    async def close(self) -> None:
        if self.flushing is not None and not self.flushing.done():
            with contextlib.suppress(Exception):
                await self.flushing
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(BaseException):
                await self.listener
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        for sentinel in getattr(self.redis, "conveyor_sentinels", ()):
            with contextlib.suppress(Exception):
                await sentinel.aclose()


class RedisClient:
    """One Redis deployment seen through a key prefix; shared by a transport and a result store.

    Args:
        url: `redis://`, `rediss://`, `unix://`, `redis+sentinel://host:26379/service/db` or
            `redis+cluster://host:port`.
        prefix: namespace of every key, so several apps can share one Redis.
    """

    def __init__(self, url: str, prefix: str = "conveyor") -> None:
        if not prefix or any(c in prefix for c in "{}*?[] "):
            raise ConfigurationError(f"invalid Redis key prefix {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.safe_url = _safe(url)
        self.cluster = urlsplit(url).scheme == "redis+cluster"
        self.scripts = _scripts()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self.users = 0

    # -- connections ------------------------------------------------------------------------------

    def here(self) -> _LoopClient:
        """The connections of the running event loop, opened on first use."""
        loop = asyncio.get_running_loop()
        client = self._loops.get(loop)
        if client is None:
            client = self._loops[loop] = _LoopClient(self, loop)
        return client

    async def startup(self) -> None:
        """Check the server answers and load the scripts."""
        try:
            await self.load_scripts(self.here().redis)
        except _CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None
        except redis_errors.RedisError as exc:
            raise self.command_error(exc) from None

    async def load_scripts(self, redis: Any) -> None:
        """Load every Lua script (on every primary of a Cluster)."""
        for name, source in self.scripts.source.items():
            sha = await redis.script_load(source)
            if sha != self.scripts.sha[name]:
                raise BrokerError(f"Redis hashed script {name!r} unexpectedly")

    async def close(self) -> None:
        """Close this loop's connections and forget those of loops that have ended."""
        loop = asyncio.get_running_loop()
        for other, client in list(self._loops.items()):
            if other is loop:
                await client.close()
            elif other.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(client.close(), other).result(5.0)
            self._loops.pop(other, None)

    def forget(self, client: _LoopClient) -> None:
        """Drop the (closed) connections of a loop that has ended."""
        if self._loops.get(client.loop) is client:
            del self._loops[client.loop]

    def connection_error(self, exc: BaseException) -> BrokerConnectionError:
        """The error a caller sees when the server cannot be reached."""
        return BrokerConnectionError(f"cannot reach Redis at {self.safe_url}: {_one_line(exc)}")

    def command_error(self, exc: BaseException) -> BaseException:
        """The error a caller sees when the server refuses a command."""
        if isinstance(exc, BrokerError | asyncio.CancelledError):
            return exc
        if isinstance(exc, _CONNECTION_ERRORS):
            return self.connection_error(exc)
        return BrokerError(f"Redis at {self.safe_url} refused a command: {_one_line(exc)}")

    # -- commands ---------------------------------------------------------------------------------

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Queue one command for this loop's next automatic pipeline; await the reply."""
        return self.here().call(*command)

    async def calls(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one pipeline, in order; raise the first error after all ran."""
        client = self.here()
        futures = [client.call(*command) for command in commands]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return list(replies)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue a run of a section of `redis.lua`; await the reply."""
        return self.call("EVALSHA", self.scripts.sha[name], len(keys), *keys, *args)

    async def direct(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a redis-py call outside the pipeline (blocking reads, scans)."""
        try:
            return await method(*args, **kwargs)
        except redis_errors.NoScriptError:
            await self.load_scripts(self.here().redis)
            return await method(*args, **kwargs)
        except _CONNECTION_ERRORS as exc:
            raise self.connection_error(exc) from None
        except redis_errors.RedisError as exc:
            raise self.command_error(exc) from None

    # -- keys -------------------------------------------------------------------------------------

    def queue_base(self, queue: str) -> str:
        """`P:{Q}`: the start of every key of one queue (one Cluster slot)."""
        return f"{self.prefix}:{{{queue}}}"

    def key(self, *parts: str) -> str:
        """A key outside any queue: `P:part:part`."""
        return ":".join((self.prefix, *parts))


_CLIENTS: dict[tuple[str, str], weakref.ReferenceType[RedisClient]] = {}


def client_for(url: str, prefix: str) -> RedisClient:
    """The `RedisClient` for a URL and prefix, shared while anything holds it."""
    ref = _CLIENTS.get((url, prefix))
    client = ref() if ref is not None else None
    if client is None:
        client = RedisClient(url, prefix)
        _CLIENTS[(url, prefix)] = weakref.ref(client)
    return client


async def _first_step(gen: AsyncIterator[None]) -> None:
    await anext(gen)


def _fail_all(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
