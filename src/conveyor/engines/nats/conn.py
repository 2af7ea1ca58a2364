"""One nats-py connection per event loop, for `NatsClient` (which keeps them in a `PerLoop`).

Invariants: the first connection fails fast with one error (concurrent callers share that one
attempt); once connected, nats-py reconnects for ever and re-subscribes by itself; `close`
flushes first, so acks sent without a reply reach the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from conveyor.engines.loops import Signal

try:
    import nats
    import nats.errors
    from nats.aio.client import Client as NatsConnection
    from nats.aio.msg import Msg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the NATS engine needs the nats extra: pip install 'conveyor[nats]'") from exc

__all__ = ["CONNECTION_ERRORS", "LoopConn", "Msg", "NatsConnection", "NatsError", "one_line"]

log = logging.getLogger("conveyor.nats")

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


class LoopConn:
    """The connection of one event loop, and the signal its wake-up subscription notifies."""

    def __init__(self, servers: list[str]) -> None:
        self.servers = servers
        self.nc: NatsConnection | None = None
        self.connecting: asyncio.Future[NatsConnection] | None = None
        self.wake_sub: Any = None
        self.woken = Signal()

    async def connection(self) -> NatsConnection:
        """The connection, opened on first use (concurrent callers share one attempt)."""
        if self.nc is not None and not self.nc.is_closed:
            return self.nc
        if self.connecting is None or self.connecting.done():
            self.connecting = asyncio.ensure_future(_connect(self.servers))
            self.wake_sub = None
        self.nc = await asyncio.shield(self.connecting)
        return self.nc

    async def wake_on(self, subjects: str) -> Signal:
        """The signal notified by each message on `subjects` (subscribed once)."""
        if self.wake_sub is None:
            nc = await self.connection()
            self.wake_sub = await nc.subscribe(subjects, cb=self._nudged)
        return self.woken

    async def _nudged(self, _msg: Msg) -> None:
        self.woken.notify()

    async def close(self) -> None:
        """Flush (acks sent without a reply reach the server first) and close."""
        nc, self.nc, self.wake_sub = self.nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()


async def _connect(servers: list[str]) -> NatsConnection:
    async def quiet(exc: Exception) -> None:  # nats-py logs every reconnect attempt otherwise
        log.debug("NATS connection: %s", exc)

    nc = await nats.connect(
        servers=servers,
        connect_timeout=3,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=1,  # the first connection fails fast: one clear error
        error_cb=quiet,
        name="conveyor",
    )
    nc.options["max_reconnect_attempts"] = -1  # once connected, ride out any outage
    return nc


def one_line(exc: BaseException) -> str:
    """An exception as `Type: message` on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
