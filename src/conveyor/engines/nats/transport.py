"""The NATS JetStream transport: work-queue streams, durable pull consumers, explicit acks.

Where messages wait and how they are published is in `queues`. A fetch takes what the loop's
long polls delivered and pulls (without waiting) from the wanted bands' consumers, highest
band first; an idle receive keeps a long poll for one message open on each of them (at most
`min(lease / 4, 1 s)`), so a message published meanwhile reaches it in one hop. The bands are
the consumers listed at the first receive of a loop and again after a nudge on `P.n.>` (a
producer's first publish to a band). Dead letters are copies on `P.x.Q` of `P_dead`.

Invariants: JetStream accepts an ack from any earlier delivery of a message, so every settle
checks the lease first: a delivery whose lease has not run out by this process's clock
(measured from before the fetch, renewed by each `+WPI`) is certainly still ours; a late one is
ours only if no later delivery recorded itself in `P.l.<seq>` of `P_leases` (a redelivery
writes that marker before it is handed out). A delivery settles after what it must leave
behind is written (the result, the new copy of a release, the dead letter). An entry whose
subject or headers a foreign writer left wrong comes back with its `problem`, never failing
its batch. A message a poll delivered that no receive took within 0.9 leases is dropped (the
server hands it out again); one taken after a quarter lease is renewed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from urllib.parse import quote, unquote

from conveyor.engines.base import (
    DEFAULT_LEASE_SECONDS,
    DeadLetter,
    Delivery,
    Location,
    MessageTransport,
    Outgoing,
    QueueStats,
)
from conveyor.engines.kit import OnClient, check_lease, typed_receipt
from conveyor.engines.loops import together
from conveyor.engines.nats.client import MARKER_SECONDS, Msg, NatsClient
from conveyor.engines.nats.conn import LoopConn, log
from conveyor.engines.nats.keys import Keys, escape, unescape, unescaped
from conveyor.engines.nats.queues import Queues, band_of
from conveyor.engines.nats.store import NatsStore
from conveyor.errors import BrokerConnectionError, BrokerError

__all__ = ["NatsTransport"]

#: Seconds between two walks deleting expired `P_kv` values (by one worker of the app per
#: period, the holder of the lease `P.l.expire`).
_HOUSEKEEPING = 30.0


class _Receipt:
    """The leased JetStream message and what proves the lease is still ours."""

    __slots__ = ("band", "dc", "deadline", "msg", "qtok", "seq", "ttok")

    def __init__(self, msg: Msg, qtok: str, band: int, ttok: str, deadline: float) -> None:
        self.msg, self.qtok, self.band, self.ttok, self.deadline = msg, qtok, band, ttok, deadline
        self.dc, self.seq = int(msg.metadata.num_delivered), int(msg.metadata.sequence.stream)


class NatsTransport(OnClient[NatsClient], MessageTransport):
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
        check_lease(lease_seconds)
        self.client, self.safe_url, self.lease_seconds = client, client.safe_url, lease_seconds
        self.queues, self.store = Queues(client, lease_seconds), store or NatsStore(client)
        self._leases = Keys(client, "leases", "l")
        self._poll = min(max(lease_seconds / 4, 0.05), 1.0)
        # When the next chores are due (monotonic), and where the next walk of `P_kv` for
        # expired values starts.
        self._next_sweep, self._next_housekeeping, self._expire_from = 0.0, 0.0, 0
        self._listed: list[tuple[str, int]] = []  # the bands of the consumers listed last
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{client.stream('work')}"

    # -- publishing and receiving -------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish every message concurrently, once the consumers of their bands are made
        (so a batch lands at once, in all its bands); a task id already held is skipped."""
        await self.queues.prepare(messages)
        await together([self.queues.publish(m) for m in messages])

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, waiting up to `timeout` for one.

        An empty `queues` reads every queue that holds messages.
        """
        if max_count <= 0:
            return []
        deadline = time.monotonic() + timeout
        wanted = {escape(q): i for i, q in enumerate(dict.fromkeys(queues))}
        conn = await self.client.loop_conn()
        while True:
            seen = conn.woken.generation
            if conn.stale:  # a band's consumer was made since the last listing
                conn.stale = False
                self._listed = [b for b in map(band_of, await self.queues.consumers()) if b]
            bands = [qb for qb in self._listed if not wanted or qb[0] in wanted]
            bands.sort(key=lambda qb: (-qb[1], wanted.get(qb[0], 0)))
            if time.monotonic() >= self._next_sweep:
                soonest = await self.queues.sweep()
                self._next_sweep = time.monotonic() + min(self._poll, soonest)
            if time.monotonic() >= self._next_housekeeping:
                await self._housekeeping()
            got = await self._fetch(conn, bands, max_count)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            # The polls stay open across sweeps.
            await conn.poll(self._next, [f"{q}-{b}" for q, b in bands], min(left, self._poll))
            nap = min(left, self._poll, max(self._next_sweep - time.monotonic(), 0.001))
            await conn.woken.wait(seen, nap)

    async def _fetch(
        self, conn: LoopConn, bands: list[tuple[str, int]], count: int
    ) -> list[Delivery]:
        """Band by band, highest first: what a long poll delivered, then a pull without
        waiting where no poll is open. Once a poll delivered, only the bands above its are
        pulled (one poll may have expired just before); when every band's last poll left
        nothing waiting, none is (the next polls deliver at once what came since)."""
        got: list[Delivery] = []
        names = [f"{qtok}-{band}" for qtok, band in bands]
        none_waiting = 0 if conn.empty.issuperset(names) else None
        top = next((i for i, name in enumerate(names) if conn.polled.get(name)), none_waiting)
        for i, name in enumerate(names):
            held = conn.polled.get(name, [])
            while held and len(got) < count:
                msg, arrived = held.pop(0)
                age = time.monotonic() - arrived
                if age > self.lease_seconds * 0.9:  # delivered again elsewhere by now
                    continue
                if age > self.lease_seconds / 4:  # renewed before it runs
                    await self.client.ack(msg, b"+WPI")
                got.append(self._delivery(msg, time.monotonic()))
            if (top is None or i < top) and len(got) < count and not conn.polling(name):
                started, asked = time.monotonic(), count - len(got)
                await self.queues.consumer(*bands[i])
                msgs = await self.client.pull("work", name, asked)
                got += (self._delivery(msg, started) for msg in msgs)
                (conn.empty.add if len(msgs) < asked else conn.empty.discard)(name)
        await asyncio.gather(*(self._mark(d.receipt) for d in got if d.receipt.dc > 1))
        return got

    def _delivery(self, msg: Msg, started: float) -> Delivery:
        """The delivery of a message on `P.w.Q.B.T`, with the deliveries of its earlier copies
        (`Conveyor-Deliveries`) added; a foreign writer's wrong task id token or header is
        its `problem`."""
        _, _, qtok, band, ttok = msg.subject.split(".")
        r = _Receipt(msg, qtok, int(band), ttok, started + self.lease_seconds)
        earlier, problem = (msg.headers or {}).get("Conveyor-Deliveries", "0"), None
        if (task_id := unescaped(ttok)) is None:
            task_id, earlier = "", "0"
            problem = f"its subject's task id token {ttok!r} is not escaped"
        elif not earlier.isdigit():
            earlier, problem = "0", f"its Conveyor-Deliveries header {earlier!r} is not an integer"
        return Delivery(task_id, unescape(qtok), msg.data, int(earlier) + r.dc, r, problem)

    async def _mark(self, r: _Receipt) -> None:
        """Record a redelivery in its lease marker: earlier deliveries settle nothing."""
        await self._leases.put(str(r.seq), str(r.dc).encode(), MARKER_SECONDS)

    async def _housekeeping(self) -> None:
        """Delete a bounded batch of expired `P_kv` values (one worker of the app per period)."""
        self._next_housekeeping = time.monotonic() + _HOUSEKEEPING
        try:
            if await self._leases.create("expire", b"1", _HOUSEKEEPING):
                self._expire_from = await self.store.expire(self._expire_from)
        except BrokerConnectionError:
            raise
        except BrokerError as exc:  # not worth failing a fetch for: the next period tries again
            log.warning("removing expired NATS key/value entries failed: %s", exc)

    # -- settling -----------------------------------------------------------------------------

    async def _still_ours(self, delivery: Delivery) -> _Receipt | None:
        """The receipt of a delivery whose lease is still ours, else None."""
        r = typed_receipt(delivery, _Receipt, "a NatsTransport")
        if time.monotonic() < r.deadline:
            return r
        marker = await self._leases.get(str(r.seq))
        return r if marker is None or int(marker) <= r.dc else None

    async def _settle(self, r: _Receipt) -> None:
        """Ack the message (held by us), dropping its lease marker if it has one."""
        if r.dc > 1:
            await self.client.purge("leases", self._leases.subject(str(r.seq)))
        await self.client.ack(r.msg)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries this consumer still holds; a lost lease settles nothing."""
        await together([self._ack(d) for d in deliveries])

    async def _ack(self, delivery: Delivery) -> None:
        if r := await self._still_ours(delivery):
            await self._settle(r)

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases this consumer still holds (`+WPI`, JetStream's "in progress")."""
        await asyncio.gather(*(self._extend(d) for d in deliveries))

    async def _extend(self, delivery: Delivery) -> None:
        if r := await self._still_ours(delivery):
            renewed = time.monotonic() + self.lease_seconds
            await self.client.ack(r.msg, b"+WPI")
            r.deadline = renewed

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Publish the message again (new body, not before `delay`), then ack this delivery.
        Without a delay the new copy takes the old one's place (its subject) at once."""
        if r := await self._still_ours(delivery):
            data = delivery.body if body is None else body
            kind, headers = "work", {"Conveyor-Deliveries": str(delivery.deliveries)}
            if delay > 0:
                kind, headers["Conveyor-Due"] = "later", repr(time.time() + delay)
                headers["Conveyor-Replaces"] = str(r.seq)
            await self.queues.put(kind, r.qtok, r.band, r.ttok, data, headers)
            await self._settle(r)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy a held delivery to `P_dead` with `reason`, then ack it. An entry without a task
        id is kept as `<seq N>` (its sequence in `P_work`)."""
        if r := await self._still_ours(delivery):
            headers = {"Conveyor-Task": escape(delivery.task_id or f"<seq {r.seq}>")}
            headers |= {"Conveyor-Reason": quote(reason), "Conveyor-Failed": repr(time.time())}
            headers["Conveyor-Band"] = str(r.band)
            await self.client.publish(self.client.subject("x", r.qtok), delivery.body, headers)
            await self._settle(r)

    # -- admin reads and operations -----------------------------------------------------------

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is: its band (leased once its consumer handed it out), or
        `P_later`."""
        await self.client.flushed()  # acks sent without waiting have landed
        find = self.queues.find
        work, later = await asyncio.gather(find("work", task_id), find("later", task_id))
        if work is not None:
            return "leased" if await self.queues.delivered(*work) else "waiting"
        return None if later is None else "delayed"

    async def remove(self, task_id: str) -> bool:
        """Delete a delayed message, or a waiting one its consumer has not handed out."""
        await self.client.flushed()
        for kind in ("work", "later"):
            place = await self.queues.find(kind, task_id)
            if place is not None and (kind == "later" or not await self.queues.delivered(*place)):
                removed = await self.client.delete(kind, place[2])
                consumer = f"{place[0]}-{place[1]}" if kind == "work" else "sweep"
                with contextlib.suppress(BrokerError):  # it counts again (see `client.pull`)
                    await self.client.api(f"CONSUMER.INFO.{self.client.stream(kind)}.{consumer}")
                return removed
        return False

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of every queue that holds messages, from its bands' consumers and the
        subjects of `P_later`."""
        later = self.client.subject_counts("later", self.client.subject("a", ">"))
        consumers, delayed = await asyncio.gather(self.queues.consumers(), later)
        totals: dict[str, list[int]] = {}
        for name, info in consumers.items():
            if (band := band_of(name)) is not None:
                counts = totals.setdefault(band[0], [0, 0, 0])
                counts[0] += int(info.get("num_pending", 0))
                counts[2] += int(info.get("num_ack_pending", 0))
        for subject, n in delayed.items():
            totals.setdefault(subject.split(".")[2], [0, 0, 0])[1] += n
        return [QueueStats(unescape(q), *c) for q, c in sorted(totals.items()) if any(c)]

    async def purge(self, queue: str | None = None) -> int:
        """Delete the waiting and delayed messages of one queue or all; running ones stay."""
        return await self.queues.purge(None if queue is None else escape(queue))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first (each with its sequence in `P_dead`); a
        header a foreign writer left out or wrong reads as empty or 0."""
        found: list[DeadLetter] = []
        every, seq = self.client.subject("x", ">"), 1
        while len(found) < limit and (stored := await self.client.get_next("dead", seq, every)):
            h, seq = stored.headers, stored.seq
            task_id = unescaped(h.get("Conveyor-Task")) or f"<dead {seq}>"
            queue = unescape(h["Nats-Subject"].split(".")[2])
            failed_at, band = _number(h.get("Conveyor-Failed")), _number(h.get("Conveyor-Band"))
            reason = unquote(h.get("Conveyor-Reason", ""))
            found.append(DeadLetter(task_id, queue, stored.data, reason, failed_at, int(band), seq))
            seq += 1
        return found

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters by sequence (a later one of the same id stays); how many."""
        seqs = [d.ref for d in letters if isinstance(d.ref, int)]
        return sum(await asyncio.gather(*(self.client.delete("dead", seq) for seq in seqs)))


def _number(text: str | None) -> float:
    """A header's number, or 0 when it is missing or not a number (a foreign letter)."""
    with contextlib.suppress(ValueError):
        return float(text or 0)
    return 0.0
