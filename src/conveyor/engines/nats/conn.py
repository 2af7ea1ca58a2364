"""One nats-py connection per event loop, for `NatsClient` (which keeps them in a `PerLoop`),
with the loop's long polls: pull requests of one message kept open on idle consumers.

Invariants: the first connection fails fast with one error (concurrent callers share that one
attempt); once connected, nats-py reconnects for ever and re-subscribes by itself; `close`
flushes first, so acks sent without a reply reach the server. A consumer has at most one long
poll open per loop, for one message, so a poll never leases more than the receive that opened
it asked for; a message one delivers waits in `polled` for the next receive of this loop, and
`close` hands back (`-NAK`) what none took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import nats.errors  # without nats-py, the registry's ImportError names the extra
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from conveyor.engines.loops import Signal

__all__ = ["CONNECTION_ERRORS", "LoopConn", "Msg", "NatsConnection", "NatsError"]

log = logging.getLogger("conveyor.nats")

#: The root of nats-py's errors.
NatsError = nats.errors.Error
#: What a lost or unreachable server raises in nats-py.
CONNECTION_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    OSError,  # TimeoutError (asyncio's) and nats-py's are ones too
)


class LoopConn:
    """The connection of one event loop, its long polls, and the signal notified by a nudge
    (`stale` is then set: a band's consumer was made) or a message a poll delivered."""

    def __init__(self, servers: list[str]) -> None:
        self.servers, self.woken, self.stale, self.inbox = servers, Signal(), True, ""
        self.nc: NatsConnection | None = None
        self.connecting: asyncio.Future[NatsConnection] | None = None
        self.wake_sub: Any = None
        self.open: dict[str, tuple[str, float]] = {}  # consumer -> (its open poll, expiry)
        self.polled: dict[str, list[tuple[Msg, float]]] = {}  # consumer -> (message, arrival)
        self.empty: set[str] = set()  # consumers whose last poll left nothing waiting

    async def connection(self) -> NatsConnection:
        """The connection, opened on first use (concurrent callers share one attempt)."""
        if self.nc is not None and not self.nc.is_closed:
            return self.nc
        if self.connecting is None or self.connecting.done():
            self.connecting = asyncio.ensure_future(_connect(self.servers))
            self.wake_sub, self.open = None, {}
        self.nc = await asyncio.shield(self.connecting)
        return self.nc

    async def wake_on(self, subjects: str) -> LoopConn:
        """This, once subscribed to the nudges on `subjects` and to its polls' inbox."""
        if self.wake_sub is None:
            nc = await self.connection()
            self.wake_sub = await nc.subscribe(subjects, cb=self._nudged)
            self.inbox = nc.new_inbox()
            await nc.subscribe(f"{self.inbox}.*", cb=self._delivered)
            self.stale = True
        return self

    async def poll(self, api: str, consumers: list[str], expires: float) -> None:
        """Open a long poll for one message on each of `consumers` without one (`api`: the
        `CONSUMER.MSG.NEXT` subject without its consumer)."""
        nc = await self.connection()
        request = json.dumps({"batch": 1, "expires": int(expires * 1e9)}).encode()
        for consumer in consumers:
            if not self.polling(consumer):
                token = nc.new_inbox()[7:]
                self.open[consumer] = token, time.monotonic() + expires + 1.0
                await nc.publish(f"{api}.{consumer}", request, reply=f"{self.inbox}.{token}")

    def polling(self, consumer: str) -> bool:
        """Whether a long poll is open on `consumer` (one lost with a connection ends by time)."""
        return self.open.get(consumer, ("", 0.0))[1] > time.monotonic()

    async def _delivered(self, msg: Msg) -> None:
        pending = 0
        if msg.reply.startswith("$JS.ACK."):
            consumer, pending = msg.metadata.consumer or "", msg.metadata.num_pending or 0
            self.polled.setdefault(consumer, []).append((msg, time.monotonic()))
        else:  # a status: the poll expired
            token = msg.subject.rpartition(".")[2]
            consumer = next((c for c, (t, _) in self.open.items() if t == token), "")
        (self.empty.discard if pending else self.empty.add)(consumer)
        self.open.pop(consumer, None)
        self.woken.notify()

    async def _nudged(self, _msg: Msg) -> None:
        self.stale = True
        self.woken.notify()

    async def close(self) -> None:
        """Hand back what polls delivered, flush (acks sent without a reply reach the server
        first) and close."""
        nc, self.nc, self.wake_sub = self.nc, None, None
        held = [msg for msgs in self.polled.values() for msg, _ in msgs]
        self.polled, self.open = {}, {}
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # a lost connection: the leases run out
                for msg in held:
                    await nc.publish(msg.reply, b"-NAK")
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
