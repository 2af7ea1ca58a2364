"""The Redis transport: Redis Streams with one consumer group per queue and priority band.

Each queue has ten streams, one per priority band, read highest band first; a message is a
stream entry until it is acked, when it is XACK-ed and XDEL-ed (so a stream only holds waiting
and leased messages and stays bounded by the backlog). A delivery is leased while its entry is
pending: a live worker renews it (XCLAIM ... JUSTID resets the idle time), and once a lease has
been idle longer than `lease_seconds` the next fetch by any worker reclaims it (XPENDING IDLE +
XCLAIM, which also yields its delivery count). Delayed messages wait in a sorted set and are
moved to their stream by whichever worker's fetch sees them due. All of it is in `redis.lua`,
whose header documents every key for `redis-cli`.

Invariants: an entry's fields are read by name, in the scripts and in `entries`, and an entry
that lacks one or holds a wrong one comes back as a `Delivery` with its `problem`, never as an
error of the batch. Commands issued in one event-loop turn share one round trip (see
`client`): a burst of publishes costs one pipeline, a fetch one script call per queue, and an
ack carries its result write when the result goes to the engine's own result store.

`P:queues` lists the queues that may hold something, for `queue_stats`, `purge`, `locate`,
`dead_letters` and `receive([])`: a queue is in it whenever it holds a message or a dead letter.
Every publish adds its queues once its messages are in (its script does; on a Cluster, where the
set is in another slot, a SADD after the scripts answered). A queue that `queue_stats` or `purge`
finds holding nothing is forgotten by `_forget`: removed from the set first, then its script,
atomic with publishes to that queue, deletes its keys if it still holds nothing, else it goes
back. So a publish racing with a forget is either seen by the check or adds its queue after the
removal, and an empty queue leaves no key behind.

A settle (ack, release, dead-letter) rides out a lost connection for as long as its lease, not
just a command's 3 s: its script checks the lease, so a resend is harmless, and until the lease
lapses nobody else gets the message. So an outage shorter than the lease (a restart, a Sentinel
failover) runs no task twice: the worker settles what it ran on the server that comes back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, get_args

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
from conveyor.engines.kit import OnClient, check_lease, consumer_id
from conveyor.engines.loops import Batcher, batcher_here, together
from conveyor.engines.redis.client import RedisClient, ms
from conveyor.engines.redis.entries import Receipt, dead_letter_of, delivery_of, receipt_of
from conveyor.engines.redis.results import RedisResultBackend
from conveyor.errors import BrokerConnectionError, BrokerError

__all__ = ["RedisTransport"]

#: The consumer group of every stream.
GROUP = "workers"
#: Queues whose key names a transport keeps built (one-off queue names must not pile up).
_KEYS_KEPT = 10_000
_BANDS = range(10)
_LOCATIONS: dict[bytes, Location] = {name.encode(): name for name in get_args(Location)}
#: The most deliveries one `ack` script call settles (Lua's `unpack` has a limit).
_ACKS_PER_CALL = 1000
#: An ack waiting for its batch: the delivery, and its result data and ttl (None: no result).
_Settle = tuple[Delivery, bytes | None, float | None]


class _QueueKeys:
    """The keys of one queue (see `redis.lua`): its base, ids hash, and streams highest first."""

    __slots__ = ("base", "ids", "streams")

    def __init__(self, base: str) -> None:
        self.base, self.ids = base, f"{base}:ids"
        self.streams = [f"{base}:s:{band}" for band in _BANDS[::-1]]


class RedisTransport(OnClient[RedisClient], MessageTransport):
    """Messages on Redis Streams, under the key prefix of the engine's `RedisClient`.

    Args:
        client: the connection shared with the engine's state store and result store.
        lease_seconds: how long a delivery stays leased without `extend`; a crashed worker's
            messages are delivered again about this long after its last renewal.
        dead_letter_limit: newest dead letters kept per queue (older ones are trimmed).
        results: the engine's result store on the same client: a result for it is stored by
            the same script call as the ack.

    Raises:
        ConfigurationError: `lease_seconds` is not positive.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        dead_letter_limit: int = 100_000,
        results: RedisResultBackend | None = None,
    ) -> None:
        check_lease(lease_seconds)
        self.client = client
        self.safe_url = client.safe_url
        self.lease_seconds = lease_seconds
        self.dead_letter_limit = dead_letter_limit
        self._results = results
        self._consumer = consumer_id()
        self._lease_ms = int(lease_seconds * 1000)
        self._reclaim_every = min(max(lease_seconds / 4, 0.05), 1.0)
        self._last_reclaim = 0.0
        self._queue_keys: dict[str, _QueueKeys] = {}  # see `_keys`
        self._acks: Batcher[_Settle] | None = None

    # -- keys -------------------------------------------------------------------------------------

    def _keys(self, queue: str) -> _QueueKeys:
        """The queue's key names, built once per queue."""
        keys = self._queue_keys.get(queue)
        if keys is None:
            if len(self._queue_keys) >= _KEYS_KEPT:
                self._queue_keys.clear()
            keys = self._queue_keys[queue] = _QueueKeys(self.client.queue_base(queue))
        return keys

    def _script(
        self, name: str, queue: str, *args: Any, keys: Sequence[str] = ()
    ) -> asyncio.Future[Any]:
        q = self._keys(queue)
        return self.client.script(name, [q.ids, *keys], [q.base, GROUP, *args])

    async def _settle(self, name: str, queue: str, *args: Any, keys: Sequence[str]) -> None:
        """Run a settle script, again through connection failures for about a lease."""
        deadline = time.monotonic() + self.lease_seconds
        while True:
            try:
                await self._script(name, queue, *args, keys=keys)
                return
            except BrokerConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _queues(self) -> list[str]:
        members = await self.client.call("SMEMBERS", self.client.key("queues"))
        return sorted(m.decode() for m in members)

    async def _each_queue(self, name: str, *args: Any) -> list[Any]:
        """Run script `name` on every queue, in one round trip."""
        return list(
            await asyncio.gather(*(self._script(name, q, *args) for q in await self._queues()))
        )

    # -- messages -------------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Add messages to their streams (or the delayed set), one script call per queue, then
        their queues to `P:queues`."""
        by_queue: dict[str, list[Any]] = {}
        for m in messages:
            args = by_queue.get(m.queue)
            if args is None:
                args = by_queue[m.queue] = []
            due = "" if m.eta is None else int(m.eta * 1000)
            args += (m.task_id, m.band, due, m.body)
        known = [] if self.client.cluster else [self.client.key("queues")]
        calls = [
            self._script("publish", queue, queue, *args, keys=known)
            for queue, args in by_queue.items()
        ]
        await together(calls)
        if calls and not known:  # a Cluster: the set is on another node, added to once they are in
            await self.client.call("SADD", self.client.key("queues"), *by_queue)

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, blocking on the streams for up to `timeout`.

        An empty `queues` reads every queue that has ever been published to.
        """
        if max_count <= 0:
            return []
        deadline = time.monotonic() + timeout
        while True:
            names = list(dict.fromkeys(queues)) or await self._queues()
            reclaim = time.monotonic() - self._last_reclaim >= self._reclaim_every
            if reclaim:
                self._last_reclaim = time.monotonic()
            got, ready, due = await self._fetch(names, max_count, reclaim)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            got = await self._block(ready, due, max_count, min(left, self._reclaim_every))
            if got:
                return got

    async def _fetch(
        self, queues: list[str], count: int, reclaim: bool
    ) -> tuple[list[Delivery], list[str], float]:
        """Lease what is ready; also say which queues can be blocked on and the next due time."""
        deliveries: list[tuple[int, Delivery]] = []
        ready: list[str] = []
        next_due = -1.0
        for queue in queues:
            left = count - len(deliveries)
            lease, wake = self._lease_ms, int(left > 0)
            out, blockable, due = await self._script(
                "fetch", queue, self._consumer, max(left, 0), lease, int(reclaim), wake
            )
            streams = self._keys(queue).streams  # highest band first
            for band, entry, fields, token in out:
                receipt = Receipt(streams[9 - band], str(band), entry.decode(), int(token))
                deliveries.append((-int(band), delivery_of(queue, receipt, fields)))
            if int(blockable):
                ready.append(queue)
            if due >= 0 and (next_due < 0 or due < next_due):
                next_due = float(due)
        deliveries.sort(key=lambda item: item[0])  # stable: bands across queues, then order
        return [d for _, d in deliveries], ready, next_due

    async def _block(
        self, queues: list[str], due_ms: float, count: int, longest: float
    ) -> list[Delivery]:
        """Wait in XREADGROUP for new entries of `queues` (leased at once when they come), until
        a delayed message is due or `longest` seconds."""
        if due_ms >= 0:
            longest = min(longest, max((due_ms - time.time() * 1000) / 1000, 0.0))
        if self.client.cluster and queues:  # one XREADGROUP may read only one slot
            queues = queues[:1]
        block_ms = int(longest * 1000)
        if block_ms <= 0:
            return []
        if not queues:
            await asyncio.sleep(longest)
            return []
        streams = [key for q in queues for key in self._keys(q).streams]
        command = ("XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", count, "BLOCK", block_ms)
        try:
            reply = await self.client.blocking(*command, "STREAMS", *streams, *[">"] * len(streams))
        except BrokerError as exc:
            if not any(word in str(exc) for word in ("NOGROUP", "UNBLOCKED")):
                raise  # else a stream was deleted (`_forget`): the next fetch remakes it
            return []
        got = [d for key, entries in reply or () for d in self._entries(key, entries)]
        if len(reply or ()) > 1:  # streams come highest band first, within one queue
            got.sort(key=lambda d: -int(d.receipt.band))
        for extra in got[count:]:  # several bands filled at once: hand back what is too many
            await self.release(extra)
        return got[:count]

    def _entries(self, key: Any, entries: Any) -> list[Delivery]:
        stream = key.decode() if isinstance(key, bytes) else str(key)
        base, _, band = stream.rpartition(":s:")
        queue = base[len(self.client.prefix) + 2 : -1]  # P:{Q} -> Q
        return [delivery_of(queue, Receipt(stream, band, eid.decode(), 1), f) for eid, f in entries]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries this consumer still holds; a lost lease settles nothing."""
        await asyncio.gather(*(self._ack(d, None, None) for d in deliveries))

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result and ack in one script call when `results` is the engine's own
        (on a Cluster the result key is in another slot: two calls)."""
        if data is None or (results is self._results and not self.client.cluster):
            await self._ack(delivery, data, ttl)
        else:
            await super().ack_with_result(delivery, results, data, ttl)

    async def _ack(self, delivery: Delivery, data: bytes | None, ttl: float | None) -> None:
        self._acks = batcher_here(self._acks, self._ack_batch)
        await self._acks.submit((delivery, data, ttl))

    async def _ack_batch(self, items: list[_Settle]) -> None:
        """Settle (and store the results of) deliveries finishing together: one script call per
        queue, which acks and deletes them with one command per stream (bench/NOTES.md: Redis
        spent more per settle on its calls and commands than on the work they do)."""
        calls: dict[tuple[str, int], tuple[list[str], list[Any]]] = {}
        for i, (delivery, data, ttl) in enumerate(items):
            call = (delivery.queue, i // _ACKS_PER_CALL)
            keys, args = calls.setdefault(call, ([], [self._consumer]))
            r = receipt_of(delivery)
            keys.append(r.stream)
            args += (len(keys) + 1, r.entry, r.token, delivery.task_id.encode())
            if data is not None and self._results is not None:
                keys.append(self._results.result_key(delivery.task_id))
                channel = self._results.done_channel(delivery.task_id)
                args += (len(keys) + 1, data, ms(ttl), channel.encode())
            else:
                args += (0, b"", "", b"")
        await together([self._settle("ack", q, *a, keys=k) for (q, _), (k, a) in calls.items()])

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` s.

        A malformed entry goes back with the fields it was read as (`t`, `b` or the fields it
        had, `n`), at once when it has no task id: the delayed set is keyed by task id.
        """
        r = receipt_of(delivery)
        if delivery.problem is not None:
            body = delivery.body if body is None else body
            delay = delay if delivery.task_id else 0.0
        ms = max(int(delay * 1000), 0)
        args = [self._consumer, r.entry, r.token, delivery.task_id, r.band, delivery.deliveries, ms]
        if body is not None:
            args.append(body)
        await self._settle("release", delivery.queue, *args, keys=[r.stream])

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases this consumer still holds."""
        await asyncio.gather(
            *(
                self._script("extend", d.queue, self._consumer, r.entry, r.token, keys=[r.stream])
                for d in deliveries
                for r in (receipt_of(d),)
            )
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to its queue's dead-letter stream; one without a task id is
        kept as `<entry ID>` (its stream entry), so no two of them share an id."""
        r = receipt_of(delivery)
        task_id = delivery.task_id or f"<entry {r.entry}>"
        limit = self.dead_letter_limit
        kept = [] if delivery.problem is None else [delivery.body]  # as read: it may have no `b`
        await self._settle(
            "dead_letter", delivery.queue, self._consumer, r.entry, r.token, task_id, r.band,
            delivery.queue, reason, limit, *kept, keys=[r.stream],
        )  # fmt: skip

    # -- admin reads and operations ---------------------------------------------------------------

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is: waiting, delayed, leased, or None when no queue holds it."""
        for found in await self._each_queue("locate", task_id, self._lease_ms):
            if found:
                return _LOCATIONS.get(found)
        return None

    async def remove(self, task_id: str) -> bool:
        """Delete a waiting or delayed message; False when it is leased or not held."""
        return any([int(n) for n in await self._each_queue("remove", task_id, self._lease_ms)])

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of every queue that holds messages, in one round trip after reading the
        queue names; the queues found holding nothing, not even a dead letter, are forgotten."""
        queues = await self._queues()
        counts = await asyncio.gather(*(self._script("stats", q) for q in queues))
        await self._forget([q for q, held in zip(queues, counts, strict=True) if not any(held)])
        return [
            QueueStats(queue, int(ready), int(scheduled), int(running))
            for queue, (ready, scheduled, running, _) in zip(queues, counts, strict=True)
            if ready or scheduled or running
        ]

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting and delayed messages of one queue or all; leased ones are kept (an
        expired lease counts as waiting, as in `locate` and `remove`). A queue left holding
        nothing is forgotten."""
        queues = await self._queues() if queue is None else [queue]
        done = await asyncio.gather(*(self._script("purge", q, self._lease_ms) for q in queues))
        await self._forget([q for q, (_, left) in zip(queues, done, strict=True) if not left])
        return sum(int(removed) for removed, _ in done)

    async def _forget(self, queues: list[str]) -> None:
        """Take queues seen holding nothing out of `P:queues` and delete their keys, unless a
        publish got to one in between (see the top: the removal comes first, then each
        queue's `forget` script, and a queue that script finds in use goes back)."""
        if not queues:
            return
        known = self.client.key("queues")
        removal = self.client.call("SREM", known, *queues)
        if self.client.cluster:  # the set is on another node: remove before the checks
            await removal
        _, *forgotten = await asyncio.gather(removal, *(self._script("forget", q) for q in queues))
        back = [q for q, gone in zip(queues, forgotten, strict=True) if not gone]
        if back:
            await self.client.call("SADD", known, *back)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages of every queue, oldest first."""
        queues = await self._queues()
        keys = [f"{self._keys(q).base}:dead" for q in queues]
        found = await self.client.calls([("XRANGE", key, "-", "+", "COUNT", limit) for key in keys])
        letters = [
            dead_letter_of(queue, flat, (key, entry))
            for queue, key, got in zip(queues, keys, found, strict=True)
            for entry, flat in got
        ]
        letters.sort(key=lambda d: d.failed_at)
        return letters[:limit]

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters by stream entry (a later one of the same id stays); how
        many were deleted."""
        entries: dict[str, list[Any]] = {}
        for letter in letters:
            if isinstance(letter.ref, tuple) and len(letter.ref) == 2:
                entries.setdefault(letter.ref[0], []).append(letter.ref[1])
        if not entries:
            return 0
        deleted = await self.client.calls([("XDEL", key, *ids) for key, ids in entries.items()])
        return sum(int(n) for n in deleted)
