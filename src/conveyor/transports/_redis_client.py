"""The Redis connection shared by `RedisTransport` and `RedisResultBackend`.

One `RedisClient` per URL and prefix holds the Lua scripts of `redis.lua` and, for each event loop
that uses it (a portal thread, `asyncio.run` elsewhere), that loop's connections: an automatic
pipeline that sends every command issued in one event-loop turn in one round trip, a connection
for blocking reads, and one pub/sub connection that wakes result waiters and workers. Plain
`redis://` and `unix://` URLs use the bare client of `_redis_bare` (no redis-py import); TLS,
Sentinel and Cluster URLs use redis-py (`_redis_py`). Errors surface as `BrokerError` /
`BrokerConnectionError` naming the URL with its password hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

from conveyor._urls import safe_url
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError
from conveyor.transports import _resp

__all__ = ["LoopClient", "RedisClient", "Scripts"]

log = logging.getLogger("conveyor.redis")

#: Seconds an idempotent command is retried through a connection failure before it raises.
RETRY_SECONDS = 3.0
_NOT_RESENDABLE_SCRIPTS = frozenset({"fetch", "incr", "rate"})
_NOT_RESENDABLE_COMMANDS = frozenset({"INCR", "INCRBY", "XREADGROUP", "XADD", "LPUSH", "RPUSH"})


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
        self.name_of = {sha: name for name, sha in self.sha.items()}


_SCRIPTS: Scripts | None = None


def _scripts() -> Scripts:
    global _SCRIPTS
    if _SCRIPTS is None:
        _SCRIPTS = Scripts()
    return _SCRIPTS


class LoopClient(Protocol):
    """The connections of one event loop (`BareLoopClient` or `PyLoopClient`)."""

    loop: asyncio.AbstractEventLoop
    closer: Any

    def call(self, *command: Any) -> asyncio.Future[Any]: ...
    async def blocking(self, *command: Any) -> Any: ...
    async def scan(self, pattern: str) -> list[bytes]: ...
    async def load_scripts(self) -> None: ...
    async def watch(self, channel: bytes, callback: Callable[[bytes], None]) -> None: ...
    async def unwatch(self, channel: bytes, callback: Callable[[bytes], None]) -> None: ...
    async def close(self) -> None: ...


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
        self.safe_url = safe_url(url)
        self.cluster = urlsplit(url).scheme == "redis+cluster"
        self.scripts = _scripts()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self._last: LoopClient | None = None  # the last one `here` returned: a dict lookup less

    # -- connections ------------------------------------------------------------------------------

    def here(self) -> LoopClient:
        """The connections of the running event loop, opened on first use."""
        loop = asyncio.get_running_loop()
        client = self._last
        if client is not None and client.loop is loop:
            return client
        client = self._loops.get(loop)
        if client is None:
            client = self._loops[loop] = self._open(loop)
        self._last = client
        return client

    def _open(self, loop: asyncio.AbstractEventLoop) -> LoopClient:
        client: LoopClient
        if _resp.supports(self.url):
            from conveyor.transports._redis_bare import BareLoopClient

            client = BareLoopClient(self, loop)
        else:
            from conveyor.transports._redis_py import PyLoopClient

            client = PyLoopClient(self, loop)
        # An async generator parked at its `yield`: when the loop ends (`asyncio.run`, a test's
        # loop) it closes the generator, whose `finally` closes these connections in time.
        closer = self._close_with_loop(client)
        loop.create_task(_first_step(closer))
        client.closer = closer  # kept alive with the client
        return client

    async def _close_with_loop(self, client: LoopClient) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.close()
            if self._loops.get(client.loop) is client:
                del self._loops[client.loop]
            if self._last is client:
                self._last = None

    async def startup(self) -> None:
        """Check the server answers and load the scripts."""
        try:
            await self.here().load_scripts()
        except (OSError, TimeoutError) as exc:
            raise self.connection_error(exc) from None

    def resendable(self, command: Sequence[Any]) -> bool:
        """Whether a command whose reply was lost may be sent again: a second run changes
        nothing (Lua steps that check the lease or the id, reads, plain writes). Not SET NX,
        counters, rate grants, or reads that lease (XREADGROUP, the fetch script)."""
        name = str(command[0]).upper()
        if name == "EVALSHA":
            return self.scripts.name_of.get(str(command[1])) not in _NOT_RESENDABLE_SCRIPTS
        if name == "SET":
            return not any(str(word).upper() == "NX" for word in command[3:])
        return name not in _NOT_RESENDABLE_COMMANDS

    def check_sha(self, name: str, sha: str) -> None:
        """Fail when the server hashed a script other than we did."""
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
        self._last = None

    def connection_error(self, exc: BaseException) -> BrokerConnectionError:
        """The error a caller sees when the server cannot be reached."""
        if isinstance(exc, BrokerConnectionError):
            return exc
        return BrokerConnectionError(f"cannot reach Redis at {self.safe_url}: {_one_line(exc)}")

    def command_error(self, exc: BaseException) -> BaseException:
        """The error a caller sees when a command fails."""
        if isinstance(exc, BrokerError | asyncio.CancelledError):
            return exc
        if isinstance(exc, OSError | TimeoutError):
            return self.connection_error(exc)
        return BrokerError(f"Redis at {self.safe_url} refused a command: {_one_line(exc)}")

    # -- commands ---------------------------------------------------------------------------------

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Send one command through this loop's automatic pipeline; await the reply."""
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

    async def blocking(self, *command: Any) -> Any:
        """Run a blocking read (XREADGROUP ... BLOCK) outside the automatic pipeline."""
        return await self.here().blocking(*command)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue a run of a section of `redis.lua`; await the reply."""
        return self.call("EVALSHA", self.scripts.sha[name], len(keys), *keys, *args)

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching `pattern` (on every primary of a Cluster)."""
        return await self.here().scan(pattern)

    async def try_watch(
        self, client: LoopClient, channel: bytes, callback: Callable[[bytes], None]
    ) -> bool:
        """`client.watch`, returning False instead of raising when Redis cannot be reached."""
        try:
            await client.watch(channel, callback)
        except Exception:  # a connection may fail in several ways while it drops
            log.debug("could not subscribe to %r", channel, exc_info=True)
            return False
        return True

    # -- keys -------------------------------------------------------------------------------------

    def queue_base(self, queue: str) -> str:
        """`P:{Q}`: the start of every key of one queue (one Cluster slot)."""
        return f"{self.prefix}:{{{queue}}}"

    def key(self, *parts: str) -> str:
        """A key outside any queue: `P:part:part`."""
        return ":".join((self.prefix, *parts))


async def _first_step(gen: AsyncIterator[None]) -> None:
    await anext(gen)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
