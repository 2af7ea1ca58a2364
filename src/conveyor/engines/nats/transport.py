"""The NATS JetStream transport: work-queue streams, durable pull consumers, explicit acks.

Where messages wait and how they are published is in `queues`. A fetch lists the bands that
hold messages (one `STREAM.INFO`) and pulls from them highest band first; an idle receive waits
on the core-NATS subject `P.n.>` (every publish to a queue sends an empty nudge there) or at
most `min(lease / 4, 1 s)`. Dead letters are copies on `P.x.Q` of `P_dead` with their reason.

Invariants: JetStream accepts an ack from any earlier delivery of a message, so every settle
checks the lease first: a delivery whose lease has not run out by this process's clock
(measured from before the fetch, renewed by each `+WPI`) is certainly still ours; a late one is
ours only if no later delivery recorded itself in `P.l.<seq>` of `P_leases` (a redelivery
writes that marker before it is handed out). A delivery settles after what it must leave
behind is written (the result, the new copy of a release, the dead letter). An entry whose
headers a foreign writer left wrong comes back with its `problem`, never failing its batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import quote, unquote

from conveyor.engines.base import (
    DEFAULT_LEASE_SECONDS,
    DeadLetter,
    Delivery,
    Location,
    MessageTransport,
    Outgoing,
    QueueStats,
    ResultBackend,
)
from conveyor.engines.nats.client import MARKER_SECONDS, Msg, NatsClient
from conveyor.engines.nats.keys import Keys, escape, task_of, unescape
from conveyor.engines.nats.queues import Queues
from conveyor.engines.nats.store import NatsStore
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError

__all__ = ["NatsTransport"]

log = logging.getLogger("conveyor.nats")

#: Seconds between two walks deleting expired `P_kv` values (by one worker of the app per
#: period, the holder of the lease `P.l.expire`).
_HOUSEKEEPING = 30.0


class _Receipt:
    """The leased JetStream message and what proves the lease is still ours."""

    __slots__ = ("band", "dc", "deadline", "msg", "seq")

    def __init__(self, msg: Msg, band: int, seq: int, dc: int, deadline: float) -> None:
        self.msg, self.band, self.seq, self.dc, self.deadline = msg, band, seq, dc, deadline


def _receipt(delivery: Delivery) -> _Receipt:
    receipt = delivery.receipt
    if not isinstance(receipt, _Receipt):
        raise TypeError(f"delivery {delivery.task_id!r} did not come from a NatsTransport")
    return receipt


def _read_headers(headers: dict[str, str] | None) -> tuple[str, int, str | None]:
    """(task id, deliveries of earlier copies, problem) of a message on a queue's subject."""
    if not headers:
        return "", 0, "it has no headers (not published by conveyor)"
    task_id, earlier = task_of(headers), headers.get("Conveyor-Deliveries", "0")
    if "Conveyor-Task" not in headers:
        return "", 0, "it has no Conveyor-Task header"
    if task_id is None:
        return "", 0, f"its Conveyor-Task header {headers['Conveyor-Task']!r} is not escaped"
    if not earlier.isdigit():
        return task_id, 0, f"its Conveyor-Deliveries header {earlier!r} is not an integer"
    return task_id, int(earlier), None


class NatsTransport(MessageTransport):
    """Messages on the app's JetStream streams.

    Args:
        client: the app's client, shared with its state store and result store.
        lease_seconds: `ack_wait` of the consumers; a crashed worker's messages are delivered
            again about this long after its last renewal.
        store: the app's state store, whose expired values the workers' housekeeping removes.

    Raises:
        ConfigurationError: `lease_seconds` is not positive.
    """

    def __init__(
        self,
        client: NatsClient,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        store: NatsStore | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.client, self.safe_url, self.lease_seconds = client, client.safe_url, lease_seconds
        self.queues = Queues(client, lease_seconds)
        self.store = store or NatsStore(client)
        self._leases = Keys(client, "leases", "l")
        self._poll = min(max(lease_seconds / 4, 0.05), 1.0)
        self._next_sweep = 0.0  # monotonic time of the next look at delayed messages
        self._next_housekeeping = 0.0
        self._expire_from = 0  # where the next walk of `P_kv` for expired values starts

    async def startup(self) -> None:
        """Connect and create the streams."""
        await self.client.startup()

    async def shutdown(self) -> None:
        """Close the connections (acks sent without a reply are flushed first)."""
        await self.client.close()

    # -- publishing and receiving -------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish every message concurrently; a task id already held is skipped."""
        await asyncio.gather(*(self.queues.publish(m) for m in messages))

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, waiting up to `timeout` for one.

        An empty `queues` reads every queue that holds messages.
        """
        if max_count <= 0:
            return []
        deadline = time.monotonic() + timeout
        wanted = list(dict.fromkeys(queues))
        while True:
            nudges = await self.client.wake_on(self.client.subject("n", ">"))
            seen = nudges.generation
            if time.monotonic() >= self._next_sweep:
                soonest = await self.queues.sweep()
                self._next_sweep = time.monotonic() + min(self._poll, soonest)
            if time.monotonic() >= self._next_housekeeping:
                await self._housekeeping()
            got = await self._fetch(wanted, max_count)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            await nudges.wait(
                seen, min(left, self._poll, max(self._next_sweep - time.monotonic(), 0.001))
            )

    async def _fetch(self, queues: list[str], count: int) -> list[Delivery]:
        order = {q: i for i, q in enumerate(queues)}
        bands = []
        for queue, qtok, band in await self.queues.bands():
            if not queues or queue in order:
                bands.append((-band, order.get(queue, 0), queue, qtok, band))
        got: list[Delivery] = []
        for *_, queue, qtok, band in sorted(bands):
            if len(got) >= count:
                break
            started = time.monotonic()
            name = await self.queues.consumer(qtok, band)
            for msg in await self.client.pull("tasks", name, count - len(got)):
                got.append(self._delivery(msg, queue, band, started))
        await asyncio.gather(*(self._mark(d) for d in got if _receipt(d).dc > 1))
        return got

    def _delivery(self, msg: Msg, queue: str, band: int, started: float) -> Delivery:
        dc, seq = int(msg.metadata.num_delivered), int(msg.metadata.sequence.stream)
        receipt = _Receipt(msg, band, seq, dc, started + self.lease_seconds)
        task_id, earlier, problem = _read_headers(msg.headers)
        return Delivery(task_id, queue, msg.data, earlier + dc, receipt, problem)

    async def _mark(self, delivery: Delivery) -> None:
        """Record a redelivery in its lease marker: earlier deliveries settle nothing."""
        r = _receipt(delivery)
        await self._leases.put(str(r.seq), str(r.dc).encode(), MARKER_SECONDS)

    async def _housekeeping(self) -> None:
        """Delete a bounded batch of expired `P_kv` values (one worker of the app per period)."""
        self._next_housekeeping = time.monotonic() + _HOUSEKEEPING
        try:
            if await self._leases.update(
                "expire", lambda live: None if live else (b"1", _HOUSEKEEPING)
            ):
                self._expire_from = await self.store.expire(self._expire_from)
        except BrokerConnectionError:
            raise
        except BrokerError as exc:  # not worth failing a fetch for: the next period tries again
            log.warning("removing expired NATS key/value entries failed: %s", exc)

    # -- settling -----------------------------------------------------------------------------

    async def _still_ours(self, delivery: Delivery) -> bool:
        r = _receipt(delivery)
        if time.monotonic() < r.deadline:
            return True
        marker = await self._leases.get(str(r.seq))
        return marker is None or int(marker) <= r.dc

    async def _settle(self, delivery: Delivery, forget: bool, *first: Awaitable[Any]) -> None:
        """Ack the message (held by us) after `first` (the result write) and the steps that
        drop what pointed at it."""
        r = _receipt(delivery)
        steps = list(first)
        if forget and delivery.task_id:
            steps.append(self.queues.index.delete(delivery.task_id, wait=False))
        if r.dc > 1:
            steps.append(self.client.purge("leases", self._leases.subject(str(r.seq))))
        await asyncio.gather(*steps)
        await self.client.ack(r.msg)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries this consumer still holds; a lost lease settles nothing."""
        if len(deliveries) == 1:  # no task switch between the ack and what the caller does next
            await self._ack(deliveries[0])
        else:
            await asyncio.gather(*(self._ack(d) for d in deliveries))

    async def _ack(self, delivery: Delivery) -> None:
        if await self._still_ours(delivery):
            await self._settle(delivery, True)

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result while the task's index entry is dropped, then ack."""
        if data is None or not await self._still_ours(delivery):
            await super().ack_with_result(delivery, results, data, ttl)
        else:
            await self._settle(delivery, True, results.set_result(delivery.task_id, data, ttl))

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases this consumer still holds (`+WPI`, JetStream's "in progress")."""
        await asyncio.gather(*(self._extend(d) for d in deliveries))

    async def _extend(self, delivery: Delivery) -> None:
        if await self._still_ours(delivery):
            r, renewed = _receipt(delivery), time.monotonic() + self.lease_seconds
            await self.client.ack(r.msg, b"+WPI")
            r.deadline = renewed

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Publish the message again (new body, not before `delay`), then ack this delivery."""
        if not await self._still_ours(delivery):
            return
        r, task_id = _receipt(delivery), delivery.task_id
        qtok, data = escape(delivery.queue), delivery.body if body is None else body
        msg_id = f"{escape(task_id)}@r{r.seq}.{r.dc}"
        if delay > 0:
            due = time.time() + delay
            where = await self.queues.to_delayed(
                task_id, qtok, r.band, data, due, delivery.deliveries, msg_id
            )
        else:
            where = await self.queues.to_tasks(
                task_id, qtok, r.band, data, delivery.deliveries, msg_id
            )
        await self.queues.index.put(task_id, where)
        await self._settle(delivery, False)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy a held delivery to `P_dead` with `reason`, then ack it. An entry without a task
        id is kept as `<seq N>` (its sequence in `P_tasks`)."""
        if not await self._still_ours(delivery):
            return
        r = _receipt(delivery)
        headers = {
            "Conveyor-Task": escape(delivery.task_id or f"<seq {r.seq}>"),
            "Conveyor-Reason": quote(reason),
            "Conveyor-Failed": repr(time.time()),
            "Conveyor-Band": str(r.band),
        }
        subject = self.client.subject("x", escape(delivery.queue))
        await self.client.publish(subject, delivery.body, headers)
        await self._settle(delivery, True)

    # -- admin reads and operations -----------------------------------------------------------

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is, from the index and its band's consumer."""
        await self.client.flushed()  # index updates sent without waiting have landed
        place = await self.queues.where(task_id, wait=False)
        if place is None:
            return None
        kind, qtok, band, seq = place
        if kind == "p":
            return "waiting"
        if await self.client.get_seq("tasks" if kind == "s" else "delayed", seq) is None:
            return None
        if kind == "d":
            return "delayed"
        return "leased" if await self.queues.delivered(qtok, band, seq) else "waiting"

    async def remove(self, task_id: str) -> bool:
        """Delete a delayed message, or a waiting one its consumer has not handed out."""
        await self.client.flushed()
        place = await self.queues.where(task_id)
        if place is None:
            return False
        kind, qtok, band, seq = place
        if kind == "s" and await self.queues.delivered(qtok, band, seq):
            return False
        if not await self.client.delete("delayed" if kind == "d" else "tasks", seq):
            return False
        await self.queues.index.delete(task_id)
        return True

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of every queue that holds messages (leased ones from the consumers' state)."""
        bands, delayed, running = await asyncio.gather(
            self.queues.bands(), self.queues.delayed(), self.queues.running()
        )
        totals: dict[str, list[int]] = {}
        for (_, qtok, band), n in bands.items():
            busy = min(running.get((qtok, band), 0), n)
            counts = totals.setdefault(qtok, [0, 0, 0])
            counts[0] += n - busy
            counts[2] += busy
        for qtok, n in delayed.items():
            totals.setdefault(qtok, [0, 0, 0])[1] += n
        return [
            QueueStats(unescape(qtok), *counts)
            for qtok, counts in sorted(totals.items())
            if any(counts)
        ]

    async def purge(self, queue: str | None = None) -> int:
        """Delete the waiting and delayed messages of one queue or all; running ones stay."""
        return await self.queues.purge(None if queue is None else escape(queue))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first (each with its sequence in `P_dead`)."""
        found: list[DeadLetter] = []
        every, seq = self.client.subject("x", ">"), 1
        while len(found) < limit:
            stored = await self.client.get_seq("dead", seq, every)
            if stored is None:
                break
            h = stored.headers
            found.append(
                DeadLetter(
                    task_id=task_of(h) or f"<dead {stored.seq}>",
                    queue=unescape(h["Nats-Subject"].split(".")[2]),
                    body=stored.data,
                    reason=unquote(h.get("Conveyor-Reason", "")),
                    failed_at=_number(h.get("Conveyor-Failed")),
                    priority=int(_number(h.get("Conveyor-Band"))),
                    ref=stored.seq,
                )
            )
            seq = stored.seq + 1
        return found

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters by sequence (a later one of the same id stays); how many."""
        seqs = [d.ref for d in letters if isinstance(d.ref, int)]
        return sum(await asyncio.gather(*(self.client.delete("dead", seq) for seq in seqs)))


def _number(text: str | None) -> float:
    """A header's number, or 0 when it is missing or not a number (a foreign letter)."""
    try:
        return float(text or 0)
    except ValueError:
        return 0.0
