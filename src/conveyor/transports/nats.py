"""The NATS JetStream transport: work-queue streams, durable pull consumers, explicit acks.

Layout (P = prefix, Q = escaped queue name, B = priority band 0-9; see docs/engines/nats.md):
a message waits on subject `P.q.Q.B` of stream `P_tasks` (work-queue retention: an acked message
is removed) and is leased by the durable pull consumer `Q-B` (`ack_wait` = the lease). A fetch
reads the bands that hold messages highest first. Delayed and retrying messages wait in
`P_delayed`, whose consumer `sweep` holds each one with a negative ack delayed until it is due
(the server keeps the timers); whichever worker fetches it then moves it to `P_tasks`. Dead
letters go to `P_dead`. `P_meta` keeps, per task id, where its message is (`P.i.<id>`), so that
a held id is not published twice and `state` / `cancel` find it; cancel requests (`P_cancels`)
and lease markers (`P_leases`) live in streams whose age limit drops them.

JetStream accepts an ack from any earlier delivery of a message, so settling checks the lease
first: a delivery whose lease has not run out here is certainly still ours; a late one is ours
only if no later delivery recorded itself in `P.l.<seq>` (a redelivery writes that marker).
What this process remembers of deliveries and cancel requests is forgotten after a while
(`_HOUSEKEEPING`), so lost leases leave nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any

from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError
from conveyor.results.base import ResultBackend
from conveyor.transports._nats_client import CANCEL_SECONDS, MARKER_SECONDS, NatsClient
from conveyor.transports._nats_conn import Msg, escape, unescape
from conveyor.transports._nats_ops import NatsOperations
from conveyor.transports._nats_state import NatsState
from conveyor.transports.base import Delivery

__all__ = ["NatsTransport"]

log = logging.getLogger("conveyor.nats")

#: Seconds between two looks at what can be forgotten: here, and expired `P_kv` values (one
#: worker of the app per period).
_HOUSEKEEPING = 30.0
#: Seconds this process remembers a delivery it saw (a later lease check asks `P_leases`).
_REMEMBER_DELIVERY = 3600.0
#: The key (in `P_leases`, next to the markers) of the worker that looks for expired values.
_EXPIRE_LOCK = "expire"


class _Receipt:
    """The leased JetStream message and what proves the lease is still ours."""

    __slots__ = ("band", "dc", "deadline", "msg", "seq")

    def __init__(self, msg: Msg, band: int, seq: int, dc: int, deadline: float) -> None:
        self.msg, self.band, self.seq, self.dc, self.deadline = msg, band, seq, dc, deadline


class NatsTransport(NatsOperations):
    """Messages on JetStream streams, small state on stream subjects, all under one prefix.

    Args:
        url: `nats://[user:password@]host:4222` (several separated by commas).
        prefix: the start of every stream name and subject, so several apps share one server.
        lease_seconds: `ack_wait` of the consumers; a crashed worker's messages are delivered
            again about this long after its last renewal.
        client: a `NatsClient` to share with a `NatsResultBackend`.
    """

    tracks_state = True

    def __init__(
        self,
        url: str = "nats://localhost:4222",
        *,
        prefix: str = "conveyor",
        lease_seconds: float = 30.0,
        client: NatsClient | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.client = client or NatsClient(url, prefix)
        self.safe_url = self.client.safe_url
        self.lease_seconds = lease_seconds
        self.kv = NatsState(self.client)
        self.meta = NatsState(self.client, "meta", "i")
        self.sets = NatsState(self.client, "kv", "set")
        self._leases = NatsState(self.client, "leases", "l")
        self._poll = min(max(lease_seconds / 4, 0.05), 1.0)
        self._next_sweep = 0.0  # monotonic time of the next look at due delayed messages
        self._latest: dict[int, tuple[int, float]] = {}  # seq -> (highest count seen, when)
        self.settling: Counter[str] = Counter()  # queue -> settles under way in this process
        self.cancels_seen: dict[str, float] = {}  # task id -> when a worker read its request
        self._next_housekeeping = 0.0
        self._expire_from = 0  # where the next walk of `P_kv` for expired values starts

    async def startup(self) -> None:
        """Connect and create the streams."""
        await self.client.startup()

    async def shutdown(self) -> None:
        """Close this event loop's connection."""
        await self.client.close()

    # -- receiving ----------------------------------------------------------------------------

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, waiting up to `timeout` for one.

        An empty `queues` reads every queue that holds messages.
        """
        if max_count <= 0:
            return []
        deadline = time.monotonic() + timeout
        conn = self.client.here()
        wanted = list(dict.fromkeys(queues))
        while True:
            seen = await conn.wake_generation(self.client.subject("n", ">"))
            if time.monotonic() >= self._next_sweep:
                await self._sweep()
            if time.monotonic() >= self._next_housekeeping:
                await self._housekeeping()
            got = await self._fetch(wanted, max_count)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            wait = min(left, self._poll, max(self._next_sweep - time.monotonic(), 0.001))
            await conn.wait_for_tasks(seen, wait)

    async def _fetch(self, queues: list[str], count: int) -> list[Delivery]:
        counts = await self.client.subject_counts("tasks", self.client.subject("q", ">"))
        order = {q: i for i, q in enumerate(queues)}
        bands: list[tuple[int, int, str, str, int]] = []
        for subject in counts:
            qtok, band_token = subject.split(".")[2:]
            queue = unescape(qtok)
            if queues and queue not in order:
                continue
            band = int(band_token)
            bands.append((-band, order.get(queue, 0), queue, qtok, band))
        bands.sort()
        got: list[Delivery] = []
        for *_, queue, qtok, band in bands:
            if len(got) >= count:
                break
            started = time.monotonic()
            name = await self._consumer(qtok, band)
            for msg in await self.client.pull("tasks", name, count - len(got)):
                got.append(self._delivery(msg, queue, band, started))
        redelivered = [d for d in got if _receipt(d).dc > 1]
        if redelivered:
            await asyncio.gather(*(self._mark_redelivered(d) for d in redelivered))
        return got

    def _delivery(self, msg: Msg, queue: str, band: int, started: float) -> Delivery:
        meta = msg.metadata
        headers = msg.headers or {}
        dc, seq = int(meta.num_delivered), int(meta.sequence.stream)
        receipt = _Receipt(msg, band, seq, dc, started + self.lease_seconds)
        self._latest[seq] = (max(self._latest.get(seq, (0, 0.0))[0], dc), time.monotonic())
        earlier = int(headers.get("Conveyor-Deliveries", 0))
        task_id = unescape(headers.get("Conveyor-Task", "="))
        return Delivery(task_id, queue, msg.data, earlier + dc, receipt)

    async def _mark_redelivered(self, delivery: Delivery) -> None:
        r = _receipt(delivery)
        await self.client.publish(
            self._marker(r.seq),
            str(r.dc).encode(),
            {"Conveyor-Expires": repr(time.time() + MARKER_SECONDS)},
        )

    async def _housekeeping(self) -> None:
        """Forget old deliveries and cancel requests seen here; one worker of the app per
        period also deletes a bounded batch of expired key/value entries."""
        now = time.monotonic()
        self._next_housekeeping = now + _HOUSEKEEPING
        latest, seen = self._latest, self.cancels_seen
        for seq in [s for s, (_, at) in latest.items() if at < now - _REMEMBER_DELIVERY]:
            del latest[seq]
        for task_id in [t for t, at in seen.items() if at < now - CANCEL_SECONDS]:
            del seen[task_id]
        try:
            if await self._leases.set_nx(_EXPIRE_LOCK, b"1", _HOUSEKEEPING):
                self._expire_from = await self.kv.expire(self._expire_from)
        except BrokerConnectionError:
            raise
        except BrokerError as exc:  # not worth failing a fetch for: the next period tries again
            log.warning("removing expired NATS key/value entries failed: %s", exc)

    def _cancel_subject(self, task_id: str) -> str:
        return self.client.subject("c", escape(task_id))

    def _marker(self, seq: int) -> str:
        return self.client.subject("l", str(seq))

    # -- settling -----------------------------------------------------------------------------

    async def _still_ours(self, delivery: Delivery) -> bool:
        r = _receipt(delivery)
        if self._latest.get(r.seq, (r.dc, 0.0))[0] > r.dc:
            return False
        if time.monotonic() < r.deadline:
            return True
        marker = await self.client.get("leases", self._marker(r.seq))
        return marker is None or marker.expired or int(marker.data) <= r.dc

    async def _settle(
        self, delivery: Delivery, forget_id: bool, first: Awaitable[Any] | None = None
    ) -> None:
        """Ack the message (we hold it) after `first` (the result write), and drop what
        pointed at it meanwhile."""
        r = _receipt(delivery)
        steps: list[Awaitable[Any]] = [] if first is None else [first]
        if forget_id:
            steps.append(self.meta.delete_later(delivery.task_id))
        if self.cancels_seen.pop(delivery.task_id, None) is not None:
            steps.append(self.client.purge_later("cancels", self._cancel_subject(delivery.task_id)))
        if r.dc > 1:
            steps.append(self.client.purge("leases", self._marker(r.seq)))
        # Until this returns, `queue_stats` here counts the message as running: the server may
        # already have dropped it, but the worker has not finished with it.
        self.settling[delivery.queue] += 1
        try:
            await asyncio.gather(*steps)
            await self.client.ack(r.msg)
        finally:
            self.settling[delivery.queue] -= 1
            if not self.settling[delivery.queue]:
                del self.settling[delivery.queue]
        if self._latest.get(r.seq, (0, 0.0))[0] == r.dc:
            del self._latest[r.seq]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries this consumer still holds; a lost lease settles nothing."""
        if len(deliveries) == 1:  # no task switch between the ack and what the caller does next
            await self._ack(deliveries[0])
        else:
            await asyncio.gather(*(self._ack(d) for d in deliveries))

    async def _ack(self, delivery: Delivery) -> None:
        if await self._still_ours(delivery):
            await self._settle(delivery, forget_id=True)

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result while the task's index entry is dropped, then ack."""
        if data is None or not await self._still_ours(delivery):
            await super().ack_with_result(delivery, results, data, ttl)
        else:
            await self._settle(delivery, True, results.set_result(delivery.task_id, data, ttl))

    async def release(
        self,
        delivery: Delivery,
        *,
        body: bytes | None = None,
        delay: float = 0.0,
        retrying: bool = False,
    ) -> None:
        """Publish the message again (new body, not before `delay`), then ack this delivery."""
        if not await self._still_ours(delivery):
            return
        r = _receipt(delivery)
        qtok, data = escape(delivery.queue), delivery.body if body is None else body
        msg_id = f"{escape(delivery.task_id)}@r{r.seq}.{r.dc}"
        if delay > 0 or retrying:
            kind = "r" if retrying else "d"
            due = time.time() + delay
            where = await self._to_delayed(
                delivery.task_id, qtok, r.band, data, due, kind, delivery.deliveries, msg_id
            )
        else:
            where = await self._to_tasks(
                delivery.task_id, qtok, r.band, data, delivery.deliveries, msg_id
            )
        await self.meta.put(delivery.task_id, where, None)
        await self._settle(delivery, forget_id=False)

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases this consumer still holds (`+WPI`, JetStream's "in progress")."""
        await asyncio.gather(*(self._extend(d) for d in deliveries))

    async def _extend(self, delivery: Delivery) -> None:
        if not await self._still_ours(delivery):
            return
        r = _receipt(delivery)
        renewed = time.monotonic() + self.lease_seconds
        await self.client.ack(r.msg, b"+WPI")
        r.deadline = renewed

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy a held delivery to `P_dead`, then ack it."""
        if not await self._still_ours(delivery):
            return
        await self.put_dead(delivery, reason, _receipt(delivery).band)
        await self._settle(delivery, forget_id=True)

    # -- small atomic state -------------------------------------------------------------------

    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent; True when this call stored it."""
        return await self.kv.set_nx(key, value, ttl)

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self.kv.put(key, value, ttl)

    async def kv_get(self, key: str) -> bytes | None:
        """The value of a live key, or None."""
        return await self.kv.get(key)

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        return await self.kv.scan(prefix)

    async def kv_delete(self, key: str) -> None:
        """Delete a key if present."""
        await self.kv.delete(key)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add `amount` to an integer key; the ttl starts when the key is made."""
        return await self.kv.incr(key, amount, ttl)

    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one grant of at most `limit` per sliding `period`; else the seconds to wait."""
        return await self.kv.rate_acquire(key, limit, period)

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Atomically add `member` to the set at `key`; return the set's size."""
        return await self.sets.set_add(key, member, ttl)


def _receipt(delivery: Delivery) -> _Receipt:
    receipt = delivery.receipt
    if not isinstance(receipt, _Receipt):
        raise TypeError(f"delivery {delivery.task_id!r} did not come from a NatsTransport")
    return receipt
