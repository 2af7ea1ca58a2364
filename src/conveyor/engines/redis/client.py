"""The Redis connection shared by the engine's transport, state store and result store.

One `RedisClient` per URL and prefix holds the Lua scripts of `redis.lua` and, through
`conveyor.engines.loops.PerLoop`, the connections of each event loop that uses it (a portal
thread, `asyncio.run` elsewhere, a forked worker's own loop): an automatic pipeline that sends
every command issued in one event-loop turn in one round trip, a connection for blocking reads,
and one pub/sub connection that wakes result waiters. Plain `redis://` and `unix://` URLs use
the bare client of `_bare` over the `conveyor.drivers.resp` driver (no redis-py
import); TLS, Sentinel and Cluster URLs use redis-py
(`_py`). Errors surface as `BrokerError` / `BrokerConnectionError` naming the URL with its
password hidden, on one line: every way of failing to connect (refused, unknown host, a TLS
handshake that never completes, no Sentinel or no primary, refused credentials) is a
`BrokerConnectionError`, never a driver's exception.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

from conveyor._urls import safe_url
from conveyor.drivers import resp
from conveyor.engines.loops import PerLoop
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError

__all__ = [
    "RETRY_SECONDS",
    "LoopClient",
    "RedisClient",
    "Scripts",
    "ms",
    "px",
]

#: Seconds an idempotent command is retried through a connection failure before it raises.
RETRY_SECONDS = 3.0
_NOT_RESENDABLE_SCRIPTS = frozenset({"fetch", "incr", "rate"})
_NOT_RESENDABLE_COMMANDS = frozenset({"INCR", "INCRBY", "XREADGROUP", "XADD", "LPUSH", "RPUSH"})
#: The first words of the replies by which Redis refuses a connection's credentials.
_REFUSALS = ("NOAUTH", "WRONGPASS")


class Scripts:
    """The sections of `redis.lua`, each with the shared prelude, by name."""

    def __init__(self) -> None:
        text = resources.files("conveyor.engines.redis").joinpath("redis.lua").read_text()
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


@functools.cache
def _scripts() -> Scripts:
    return Scripts()


def ms(ttl: float | None) -> int | str:
    """`ttl` seconds as whole milliseconds, at least 1 (a script's "" for None: no expiry)."""
    return "" if ttl is None else max(int(ttl * 1000), 1)


def px(ttl: float | None) -> tuple[Any, ...]:
    """The `PX <ms>` words of a SET expiring after `ttl` seconds (none for None)."""
    return () if ttl is None else ("PX", ms(ttl))


class LoopClient(Protocol):
    """The connections of one event loop (`BareLoopClient` or `PyLoopClient`)."""

    def call(self, *command: Any) -> asyncio.Future[Any]: ...
    async def blocking(self, *command: Any) -> Any: ...
    async def scan(self, pattern: str) -> list[bytes]: ...
    async def load_scripts(self) -> None: ...
    async def watch(self, channel: bytes, callback: Callable[[bytes], None]) -> None: ...
    async def unwatch(self, channel: bytes, callback: Callable[[bytes], None]) -> None: ...
    async def close(self) -> None: ...


async def _close(client: LoopClient) -> None:
    await client.close()


class RedisClient:
    """One Redis deployment seen through a key prefix; shared by the engine's three parts.

    Args:
        url: `redis://`, `rediss://`, `unix://`, `redis+sentinel://host:26379/service/db` or
            `redis+cluster://host:port`, without conveyor's query options.
        prefix: namespace of every key, so several apps can share one Redis.

    Raises:
        ConfigurationError: the prefix is empty or holds a character that is special in a key
            pattern or a Cluster hash tag.
    """

    def __init__(self, url: str, prefix: str = "conveyor") -> None:
        if not prefix or any(c in prefix for c in "{}*?[] "):
            raise ConfigurationError(f"invalid Redis key prefix {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.safe_url = safe_url(url)
        self.cluster = urlsplit(url).scheme == "redis+cluster"
        self.scripts = _scripts()
        self._loops: PerLoop[LoopClient] = PerLoop(self._open, _close)

    # -- connections ------------------------------------------------------------------------------

    def here(self) -> LoopClient:
        """The connections of the running event loop, opened on first use."""
        return self._loops.here()

    def _open(self, loop: asyncio.AbstractEventLoop) -> LoopClient:
        if resp.supports(self.url):
            from conveyor.engines.redis._bare import BareLoopClient

            return BareLoopClient(self, loop)
        from conveyor.engines.redis._py import PyLoopClient

        return PyLoopClient(self, loop)

    async def startup(self) -> None:
        """Check the server answers and load the scripts."""
        try:
            await self.here().load_scripts()
        except (OSError, TimeoutError) as exc:
            raise self.connection_error(exc) from None

    async def close(self) -> None:
        """Close this loop's connections, and ask the other running loops to close theirs."""
        await self._loops.close_all()

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

    def connection_error(self, exc: BaseException) -> BrokerConnectionError:
        """The error a caller sees when the server cannot be reached."""
        if isinstance(exc, BrokerConnectionError):
            return exc
        return BrokerConnectionError(f"cannot reach Redis at {self.safe_url}: {_one_line(exc)}")

    def command_error(self, exc: BaseException) -> BaseException:
        """The error a caller sees when a command fails (a refusal of the credentials is a
        connection error)."""
        if isinstance(exc, BrokerError | asyncio.CancelledError):
            return exc
        if isinstance(exc, OSError | TimeoutError) or str(exc).startswith(_REFUSALS):
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

    async def mget(self, keys: Sequence[str | bytes]) -> list[Any]:
        """The values of `keys` in one round trip: one MGET, or on a Cluster (where one MGET
        reads one slot) a GET each in the same pipeline."""
        if not keys:
            return []
        if self.cluster:
            return await self.calls([("GET", key) for key in keys])
        return list(await self.call("MGET", *keys))

    async def blocking(self, *command: Any) -> Any:
        """Run a blocking read (XREADGROUP ... BLOCK) outside the automatic pipeline."""
        return await self.here().blocking(*command)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue a run of a section of `redis.lua`; await the reply."""
        return self.call("EVALSHA", self.scripts.sha[name], len(keys), *keys, *args)

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching `pattern` (on every primary of a Cluster)."""
        return await self.here().scan(pattern)

    # -- keys -------------------------------------------------------------------------------------

    def queue_base(self, queue: str) -> str:
        """`P:{Q}`: the start of every key of one queue (one Cluster slot)."""
        return f"{self.prefix}:{{{queue}}}"

    def key(self, *parts: str) -> str:
        """A key outside any queue: `P:part:part`."""
        return ":".join((self.prefix, *parts))


def _one_line(exc: BaseException) -> str:
    """The exception on one line, after its type's name unless it is a plain ConnectionError
    (the drivers' own errors arrive as one, already named)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if type(exc) is ConnectionError else f"{type(exc).__name__}: {text}"
