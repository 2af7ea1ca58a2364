"""One nats-py connection per event loop, and the naming and value helpers of the NATS engine.

`LoopConn` connects lazily (failing fast the first time, then reconnecting for ever), closes
itself when its event loop ends, and wakes waiting receivers when a task subject gets a message
(a core NATS subscription to the empty "nudge" each publish sends after its message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

try:
    import nats
    import nats.errors
    from nats.aio.client import Client as NatsConnection
    from nats.aio.msg import Msg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the NATS engine needs the nats extra: pip install 'conveyor[nats]'") from exc

__all__ = [
    "CONNECTION_ERRORS",
    "LoopConn",
    "Msg",
    "NatsConnection",
    "NatsError",
    "Stored",
    "escape",
    "expiry",
    "has_expired",
    "one_line",
    "unescape",
]

log = logging.getLogger("conveyor.nats")

EXPIRES = "Conveyor-Expires"
_SAFE = re.compile(r"[A-Za-z0-9_:@+,~!#$%&()|^-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9_:@+,~!#$%&()|^-]+")
#: The root of nats-py's errors.
NatsError = nats.errors.Error
#: What a lost or unreachable server raises in nats-py.
CONNECTION_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    OSError,
    TimeoutError,
)


def escape(text: str) -> str:
    """Make `text` one subject token (and a valid consumer name): `.`, `*`, `>`, spaces... as
    `=XX`."""
    if _ALL_SAFE.fullmatch(text):
        return text
    return "".join(c if _SAFE.fullmatch(c) else _hex(c) for c in text) or "="


def _hex(char: str) -> str:
    return "".join(f"={b:02X}" for b in char.encode())


def unescape(token: str) -> str:
    """The text `escape` made `token` from."""
    if "=" not in token:
        return token
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            raw += bytes.fromhex(token[i + 1 : i + 3])
            i += 3
        else:
            raw += token[i].encode()
            i += 1
    return raw.decode(errors="replace")


class Stored:
    """The last message of a subject: its value, sequence and headers."""

    __slots__ = ("data", "headers", "seq")

    def __init__(self, data: bytes, seq: int, headers: dict[str, str]) -> None:
        self.data, self.seq, self.headers = data, seq, headers

    @property
    def expired(self) -> bool:
        """Whether the value's own expiry (header `Conveyor-Expires`) has passed."""
        return has_expired(self.headers)


def has_expired(headers: dict[str, str] | None) -> bool:
    """Whether a message's own expiry (header `Conveyor-Expires`) has passed."""
    expires = (headers or {}).get(EXPIRES)
    return expires is not None and float(expires) <= time.time()


def expiry(ttl: float | None) -> dict[str, str]:
    """Headers giving a value an expiry `ttl` seconds from now (none for None)."""
    return {} if ttl is None else {EXPIRES: repr(time.time() + max(ttl, 0.001))}


class LoopConn:
    """The connection of one event loop, and its wake-ups from core NATS subscriptions."""

    def __init__(
        self,
        servers: list[str],
        loop: asyncio.AbstractEventLoop,
        ended: Callable[[LoopConn], None],
    ) -> None:
        self.servers, self.loop, self.ended = servers, loop, ended
        self.nc: NatsConnection | None = None
        self.connecting: asyncio.Future[NatsConnection] | None = None
        self.waiters: set[asyncio.Future[None]] = set()
        self.wake_sub: Any = None
        self.generation = 0
        self.closer = self._close_with_loop()
        loop.create_task(_first_step(self.closer))

    async def _close_with_loop(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.close()
            self.ended(self)

    async def connection(self) -> NatsConnection:
        """The connection, opened on first use (concurrent callers share one attempt)."""
        if self.nc is not None and not self.nc.is_closed:
            return self.nc
        if self.connecting is None or self.connecting.done():
            self.connecting = self.loop.create_future()
            try:
                self.nc = await _connect(self.servers)
                self.wake_sub = None
            except BaseException as exc:
                self.connecting.set_exception(exc)
                self.connecting.exception()  # retrieved: later callers get it too
                self.connecting = None
                raise
            self.connecting.set_result(self.nc)
            return self.nc
        return await asyncio.shield(self.connecting)

    async def wake_generation(self, subjects: str) -> int:
        """Subscribe to `subjects` (once); return how many messages they have had."""
        if self.wake_sub is None:
            nc = await self.connection()
            self.wake_sub = await nc.subscribe(subjects, cb=self._woken)
        return self.generation

    async def wait_for_tasks(self, seen: int, timeout: float) -> None:
        """Wait until a task is published after generation `seen`, or `timeout` passes."""
        if self.generation != seen:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            self.waiters.discard(waiter)

    async def _woken(self, _msg: Msg) -> None:
        self.generation += 1
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        """Flush and close the connection."""
        nc, self.nc = self.nc, None
        self.wake_sub = None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)  # acks sent without a reply reach the server first
            with contextlib.suppress(Exception):
                await nc.close()


async def _connect(servers: list[str]) -> NatsConnection:
    async def quiet(_exc: Exception) -> None:  # nats-py logs every reconnect attempt otherwise
        log.debug("NATS connection: %s", _exc)

    nc = await nats.connect(
        servers=servers,
        connect_timeout=3,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=1,  # the first connection fails fast: one clear error
        allow_reconnect=True,
        error_cb=quiet,
        name="conveyor",
    )
    nc.options["max_reconnect_attempts"] = -1  # once connected, ride out any outage
    return nc


async def _first_step(gen: AsyncIterator[None]) -> None:
    await anext(gen)


def one_line(exc: BaseException) -> str:
    """An exception as `Type: message` on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
