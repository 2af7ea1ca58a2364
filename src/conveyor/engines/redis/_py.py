"""The connections of one event loop through redis-py, for `rediss://`, Sentinel and Cluster URLs.

Plain `redis://` and `unix://` URLs use the bare client of `_bare` instead (faster, and a
worker that never imports redis-py is about 11 MB smaller). Both offer the same methods to
`RedisClient`. Commands issued in one event-loop turn go out as one redis-py pipeline; redis-py's
exceptions are turned into the built-in `ConnectionError` (every failure to connect: refused,
timed out, refused credentials, no Sentinel, no primary, no Cluster node) or `BrokerError`
before a caller sees them, so that `RedisClient` reports one line naming the URL.

The pub/sub connection is read only by the listener task, and (re)connected (which reads the
handshake's replies and resubscribes) and written to only under `PyLoopClient.subscribing`:
redis-py would otherwise reconnect it inside whichever subscribe, unsubscribe or read first
met the dropped socket, and two of them at once read one stream ("read() called while another
coroutine is already waiting") or open two sockets, one never closed. Once connected it gets
`_NO_RETRY`, so that redis-py never reconnects it by itself; the listener does, after a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from conveyor._urls import safe_url
from conveyor.drivers.resp import Watchers
from conveyor.engines.redis.client import RETRY_SECONDS, RedisClient
from conveyor.errors import ConfigurationError

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "TLS, Sentinel and Cluster Redis URLs need the redis extra: pip install 'conveyor[redis]'"
    ) from exc

__all__ = ["PyLoopClient"]

log = logging.getLogger("conveyor.redis")

_CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
_DRIVER_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)
#: The pub/sub connection's retry policy: no error is retried, so no reconnect inside a command
#: or a read (redis-py runs its reconnect even before it gives up on zero retries).
_NO_RETRY = Retry(NoBackoff(), 0, supported_errors=())


def plain(exc: BaseException) -> BaseException:
    """A redis-py failure to connect as the built-in `ConnectionError` naming its kind ("No
    Cluster node", "AuthenticationError: ..."); other exceptions unchanged."""
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError) or (
        type(exc) is redis_errors.RedisClusterException  # its subclasses are not about connecting
    ):
        text = " ".join(str(exc).split())
        return ConnectionError(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    return exc


class _Sentinel(Sentinel):
    """redis-py's Sentinel client, saying in one short line why no primary was found.

    redis-py's own `MasterNotFoundError` lists each Sentinel's client with all its options, and
    a host that is not a Sentinel fails with a bare "unknown command" `ResponseError`.
    """

    async def discover_master(self, service_name: str) -> Any:
        """The (host, port) of the primary a Sentinel names `service_name`, asking each in
        turn (the first to answer goes first next time); else `MasterNotFoundError`."""
        why = []
        for i, sentinel in enumerate(self.sentinels):
            where = "{host}:{port}".format_map(sentinel.connection_pool.connection_kwargs)
            try:
                masters = await sentinel.sentinel_masters()
            except redis_errors.RedisError as exc:
                why.append(f"{where}: {' '.join(str(exc).split())}")
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None  # RESP2
            if state and self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[i] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
            why.append(f"{where} knows no live primary of that name")
        raise MasterNotFoundError(f"no primary named {service_name!r} ({'; '.join(why)})")


def connect(url: str) -> Any:
    """A redis-py asyncio client for a `rediss://`, `redis+sentinel://` or `redis+cluster://`
    URL (or any other redis-py accepts)."""
    options: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 15.0}
    parts = urlsplit(url)
    if parts.scheme == "redis+cluster":
        return RedisCluster.from_url(parts._replace(scheme="redis").geturl(), **options)
    if parts.scheme == "redis+sentinel":
        # redis+sentinel://[:password@]host:port[,host:port]/service[/db]
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ConfigurationError(f"{safe_url(url)!r} names no Sentinel service: add /mymaster")
        hosts = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.partition(":")
            hosts.append((host, int(port or 26379)))
        password = unquote(parts.password) if parts.password else None
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = _Sentinel(  # type: ignore[no-untyped-call]
            hosts, sentinel_kwargs={"password": password}, **options
        )
        primary = sentinel.master_for(path[0], password=password, db=db)
        primary.conveyor_sentinels = sentinel.sentinels  # closed with the client
        return primary
    return aioredis.Redis.from_url(url, **options)


#: The commands issued in one event-loop turn, each with its caller's future: one pipeline.
_Batch = list[tuple[tuple[Any, ...], asyncio.Future[Any]]]


class PyLoopClient:
    """The redis-py connections, automatic pipeline and pub/sub of one event loop."""

    def __init__(self, owner: RedisClient, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.redis = connect(owner.url)
        self.batch: _Batch | None = None
        self.flushing: asyncio.Task[None] | None = None
        self.pubsub: Any = None
        #: Held while the pub/sub connection connects, disconnects or is written to.
        self.subscribing = asyncio.Lock()
        self.listener: asyncio.Task[None] | None = None
        self.watchers = Watchers()

    def error(self, exc: BaseException) -> BaseException:
        """What a caller sees for a redis-py exception."""
        return self.owner.command_error(plain(exc))

    # -- commands -------------------------------------------------------------------------------

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Queue one command for the next pipeline; the future gets its reply or error."""
        if self.batch is None:
            self.batch = []
            if self.flushing is None or self.flushing.done():
                self.flushing = self.loop.create_task(self._flush_soon())
        future: asyncio.Future[Any] = self.loop.create_future()
        self.batch.append((command, future))
        return future

    async def _flush_soon(self) -> None:
        while self.batch is not None:
            await asyncio.sleep(0)  # let every caller of this turn add its command
            batch, self.batch = self.batch, None
            if batch is not None:
                await self._send(batch)

    async def _send(self, batch: _Batch) -> None:
        try:
            replies = await self._pipeline_retrying([command for command, _ in batch])
        except BaseException as exc:
            error = self.error(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(self.error(reply))
            else:
                future.set_result(reply)

    async def _pipeline_retrying(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send a pipeline, again through connection failures for up to `RETRY_SECONDS` when
        every command in it may be sent twice (`RedisClient.resendable`)."""
        deadline = time.monotonic() + RETRY_SECONDS
        again = all(self.owner.resendable(command) for command in commands)
        while True:
            try:
                return await self._pipeline(commands)
            except _CONNECTION_ERRORS:
                if not again or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1 and not self.owner.cluster:  # no pipeline object for one command
            try:
                replies = [await self.redis.execute_command(*commands[0])]
            except redis_errors.ResponseError as exc:
                replies = [exc]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis_errors.NoScriptError)]
        if missing:  # a restarted server forgot the scripts: load them and send those again
            await self.load_scripts()
            again = await self._pipeline([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _direct(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except redis_errors.NoScriptError:
            await self.load_scripts()
            return await method(*args, **kwargs)
        except _DRIVER_ERRORS as exc:
            raise self.error(exc) from None

    async def blocking(self, *command: Any) -> Any:
        """Run a blocking read outside the automatic pipeline."""
        return await self._direct(self.redis.execute_command, *command)

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching `pattern` (on every primary of a Cluster)."""

        async def keys() -> list[bytes]:
            return [key async for key in self.redis.scan_iter(match=pattern, count=1000)]

        result: list[bytes] = await self._direct(keys)
        return result

    async def load_scripts(self) -> None:
        """Load every Lua script (on every primary of a Cluster)."""
        for name, source in self.owner.scripts.source.items():
            try:
                sha = await self.redis.script_load(source)
            except _DRIVER_ERRORS as exc:
                raise self.error(exc) from None
            self.owner.check_sha(name, sha)

    # -- pub/sub ----------------------------------------------------------------------------------

    async def watch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        """Call `callback(data)` for every message on `channel` until `unwatch`.

        Raises `BrokerError` when the subscription cannot be made (Redis is down, or the
        listener is reconnecting: it subscribes `channel` again once it is back).
        """
        if channel not in self.watchers:
            await self._direct(self._subscribe, channel)
        self.watchers.add(channel, callback)
        if self.listener is None or self.listener.done():
            self.listener = self.loop.create_task(self._listen(), name="conveyor-redis-pubsub")

    async def unwatch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        """Stop calling `callback` for `channel`."""
        if self.watchers.remove(channel, callback):
            await self._unsubscribe(channel)

    def _up(self) -> bool:
        """Whether the pub/sub connection is connected (and, under `subscribing`, set up)."""
        connection = None if self.pubsub is None else self.pubsub.connection
        return connection is not None and bool(connection.is_connected)

    async def _subscribe(self, channel: bytes) -> None:
        async with self.subscribing:
            if self.listener is not None and not self.listener.done() and not self._up():
                raise ConnectionError("the pub/sub connection is down; its listener reconnects")
            if self.pubsub is None:
                self.pubsub = self.redis.pubsub()
            await self.pubsub.subscribe(channel)  # connects only while no listener reads
            self.pubsub.connection.retry = _NO_RETRY

    async def _unsubscribe(self, channel: bytes) -> None:
        async with self.subscribing:
            self.pubsub.channels.pop(channel, None)  # not subscribed again after a reconnect
            if self._up():  # else there is nothing to unsubscribe from
                with contextlib.suppress(*_CONNECTION_ERRORS, redis_errors.RedisError):
                    await self.pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                if not self._up():
                    async with self.subscribing:  # reconnects and resubscribes every channel
                        await self.pubsub.connect()
                # connected: nothing is awaited before the read, which thus cannot reconnect
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                failures = 0
            except Exception:  # any failure of the connection: reconnect and keep listening
                failures += 1
                log.debug("pub/sub connection lost (%d)", failures, exc_info=True)
                async with self.subscribing:
                    with contextlib.suppress(Exception):
                        await self.pubsub.connection.disconnect(nowait=True)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            if message is None or message.get("type") != "message":
                continue
            self.watchers.deliver(message["channel"], message["data"])

    async def close(self) -> None:
        """Close every connection of this loop."""
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
