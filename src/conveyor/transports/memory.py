"""The in-process transport: plain asyncio, for tests, demos and `InMemoryBroker`.

Each queue keeps two heaps: `ready` (priority desc, then available time, then publish order) and
`timers` (messages that become available later: an ETA, a retry delay or the end of a lease).
Heap entries carry the message's version, so an entry made stale by a later change is skipped
when it surfaces instead of being searched for. `receive` sleeps until a publish or release
wakes it, or until the earliest timer of the queues it reads: it never polls.

Publishing a `task_id` that is already held is ignored: the first copy stays.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor._signal import Signal
from conveyor.errors import BrokerError, ConfigurationError
from conveyor.transports.base import (
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
    TransportState,
)

__all__ = ["MemoryTransport"]

_CANCEL_TTL = 3600.0
_SWEEP_EVERY = 60.0

# (-priority, available_at, seq, version, task_id) and (available_at, seq, version, task_id)
_ReadyEntry = tuple[int, float, int, int, str]
_TimerEntry = tuple[float, int, int, str]


@dataclass(slots=True)
class _Message:
    task_id: str
    queue: str
    body: bytes
    priority: int
    available_at: float
    seq: int
    deliveries: int = 0
    leased: bool = False
    retrying: bool = False
    version: int = 0

    def running(self, now: float) -> bool:
        return self.leased and self.available_at > now

    def state(self, now: float) -> TransportState:
        if self.running(now):
            return "running"
        if self.retrying:
            return "retrying"
        return "scheduled" if self.available_at > now else "queued"


@dataclass(slots=True)
class _Queue:
    ready: list[_ReadyEntry] = field(default_factory=list)
    timers: list[_TimerEntry] = field(default_factory=list)


class MemoryTransport(Transport):
    """Queues, leases and small state in this process's memory; nothing survives a restart.

    Args:
        lease_seconds: how long a delivery stays leased without `extend`.
    """

    tracks_state = True

    def __init__(self, lease_seconds: float = 30.0) -> None:
        self.lease_seconds = lease_seconds
        self.safe_url = "memory://"
        self._messages: dict[str, _Message] = {}
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count()
        self._wakeup = Signal()
        self._dead: dict[str, tuple[DeadLetter, int]] = {}
        self._cancels: dict[str, float] = {}
        self._kv: dict[str, tuple[bytes, float | None]] = {}
        self._grants: dict[str, tuple[float, deque[float]]] = {}
        self._sets: dict[str, tuple[set[str], float | None]] = {}
        self._last_sweep = time.monotonic()

    # -- indexing -------------------------------------------------------------------------

    def _index(self, msg: _Message, now: float) -> None:
        """File a message under its queue after any change; older heap entries go stale."""
        msg.version += 1
        queue = self._queues.setdefault(msg.queue, _Queue())
        if msg.available_at <= now and not msg.leased:
            heapq.heappush(queue.ready, self._ready_entry(msg))
        else:
            heapq.heappush(queue.timers, (msg.available_at, msg.seq, msg.version, msg.task_id))

    @staticmethod
    def _ready_entry(msg: _Message) -> _ReadyEntry:
        return (-msg.priority, msg.available_at, msg.seq, msg.version, msg.task_id)

    def _live(self, task_id: str, version: int) -> _Message | None:
        msg = self._messages.get(task_id)
        return msg if msg is not None and msg.version == version else None

    def _promote(self, queue: _Queue, now: float) -> None:
        while queue.timers and queue.timers[0][0] <= now:
            _, _, version, task_id = heapq.heappop(queue.timers)
            msg = self._live(task_id, version)
            if msg is not None:
                heapq.heappush(queue.ready, self._ready_entry(msg))

    def _next_timer(self, queue: _Queue) -> float | None:
        while queue.timers and self._live(queue.timers[0][3], queue.timers[0][2]) is None:
            heapq.heappop(queue.timers)
        return queue.timers[0][0] if queue.timers else None

    def _head(self, queue: _Queue) -> _ReadyEntry | None:
        while queue.ready and self._live(queue.ready[0][4], queue.ready[0][3]) is None:
            heapq.heappop(queue.ready)
        return queue.ready[0] if queue.ready else None

    def _pop_best(self, queues: Sequence[_Queue]) -> _Message | None:
        best: tuple[_ReadyEntry, _Queue] | None = None
        for queue in queues:
            head = self._head(queue)
            if head is not None and (best is None or head < best[0]):
                best = (head, queue)
        if best is None:
            return None
        heapq.heappop(best[1].ready)
        return self._messages[best[0][4]]

    def _chosen(self, names: Sequence[str]) -> list[_Queue]:
        if not names:
            return list(self._queues.values())
        return [self._queues[name] for name in names if name in self._queues]

    def _take(self, names: Sequence[str], max_count: int) -> list[Delivery]:
        now = time.time()
        queues = self._chosen(names)
        for queue in queues:
            self._promote(queue, now)
        batch: list[Delivery] = []
        while len(batch) < max_count and (msg := self._pop_best(queues)) is not None:
            msg.leased, msg.retrying = True, False
            msg.deliveries += 1
            msg.available_at = now + self.lease_seconds
            self._index(msg, now)
            batch.append(Delivery(msg.task_id, msg.queue, msg.body, msg.deliveries, msg.deliveries))
        return batch

    def _held(self, delivery: Delivery) -> _Message | None:
        """Return the message while this delivery still holds it (no later delivery took it)."""
        msg = self._messages.get(delivery.task_id)
        if msg is None or not msg.leased or msg.deliveries != delivery.receipt:
            return None
        return msg

    # -- messages -------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Enqueue messages; ids already held are ignored."""
        now = time.time()
        for out in messages:
            if out.task_id in self._messages:
                continue
            at = now if out.eta is None else out.eta
            msg = _Message(out.task_id, out.queue, out.body, out.priority, at, next(self._seq))
            self._messages[out.task_id] = msg
            self._index(msg, now)
        self._wakeup.notify()

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` ready messages, waiting up to `timeout` seconds for one.

        An empty `queues` reads every queue.
        """
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + timeout
        while True:
            seen = self._wakeup.generation
            batch = self._take(names, max_count)
            left = deadline - time.monotonic()
            if batch or max_count <= 0 or left <= 0:
                return batch
            timers = [self._next_timer(queue) for queue in self._chosen(names)]
            due = min((t for t in timers if t is not None), default=None)
            if due is not None:
                left = min(left, max(due - time.time(), 0.0))
            await self._wakeup.wait(seen, left)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget deliveries this consumer still holds."""
        for delivery in deliveries:
            if self._held(delivery) is not None:
                del self._messages[delivery.task_id]
                self._cancels.pop(delivery.task_id, None)

    async def release(
        self,
        delivery: Delivery,
        *,
        body: bytes | None = None,
        delay: float = 0.0,
        retrying: bool = False,
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` seconds."""
        msg = self._held(delivery)
        if msg is None:
            return
        now = time.time()
        msg.body = msg.body if body is None else body
        msg.leased, msg.retrying = False, retrying
        msg.available_at = now + max(delay, 0.0)
        self._index(msg, now)
        self._wakeup.notify()

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries this consumer still holds."""
        now = time.time()
        for delivery in deliveries:
            msg = self._held(delivery)
            if msg is not None:
                msg.available_at = now + self.lease_seconds
                self._index(msg, now)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to the dead letters with the reason."""
        msg = self._held(delivery)
        if msg is None:
            return
        del self._messages[msg.task_id]
        self._cancels.pop(msg.task_id, None)
        self._dead.pop(msg.task_id, None)  # a second failure goes to the end of the list
        self._dead[msg.task_id] = (
            DeadLetter(msg.task_id, msg.queue, msg.body, reason),
            msg.priority,
        )

    # -- cancellation and state -----------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Drop a waiting message (True), or remember the request for a running one (False)."""
        now = time.time()
        msg = self._messages.get(task_id)
        if msg is not None and not msg.running(now):
            del self._messages[task_id]
            return True
        self._cancels = {k: t for k, t in self._cancels.items() if t > now}
        self._cancels[task_id] = now + _CANCEL_TTL
        return False

    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Return which of these task ids have a live cancel request."""
        now = time.time()
        return {task_id for task_id in task_ids if self._cancels.get(task_id, 0.0) > now}

    async def state(self, task_id: str) -> TransportState | None:
        """Return "queued", "scheduled", "running" or "retrying", or None when not held."""
        msg = self._messages.get(task_id)
        return None if msg is None else msg.state(time.time())

    # -- inspection and operations ----------------------------------------------------------

    async def queue_stats(self) -> list[QueueStats]:
        """Return ready, scheduled and running counts of every queue holding messages."""
        now = time.time()
        counts: dict[str, list[int]] = {}
        for msg in self._messages.values():
            row = counts.setdefault(msg.queue, [0, 0, 0])
            row[2 if msg.running(now) else 1 if msg.available_at > now else 0] += 1
        return [QueueStats(name, *counts[name]) for name in sorted(counts)]

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting (not running) messages of one queue or all; return how many."""
        now = time.time()
        doomed = [
            msg.task_id
            for msg in self._messages.values()
            if (queue is None or msg.queue == queue) and not msg.running(now)
        ]
        for task_id in doomed:
            del self._messages[task_id]
        return len(doomed)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead-lettered messages, oldest first."""
        return [letter for letter, _ in itertools.islice(self._dead.values(), max(limit, 0))]

    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead-lettered messages (all when None) back to their queues; return how many."""
        chosen = list(self._dead) if task_ids is None else [t for t in task_ids if t in self._dead]
        moved = [self._dead.pop(task_id) for task_id in chosen]
        await self.publish(
            [Outgoing(d.task_id, d.queue, d.body, priority) for d, priority in moved]
        )
        return len(moved)

    # -- small atomic state -----------------------------------------------------------------

    def _live_value(self, key: str, now: float) -> bytes | None:
        item = self._kv.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._kv[key]
            return None
        return item[0]

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        self._kv = {k: v for k, v in self._kv.items() if v[1] is None or v[1] > now}
        self._grants = {k: g for k, g in self._grants.items() if g[1] and g[1][-1] + g[0] > now}
        self._sets = {k: v for k, v in self._sets.items() if v[1] is None or v[1] > now}

    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent or expired; return True when this call stored it."""
        if self._live_value(key, time.monotonic()) is not None:
            return False
        await self.kv_set(key, value, ttl)
        return True

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `key`, replacing any value, expiring after `ttl` seconds when given."""
        now = time.monotonic()
        self._sweep(now)
        self._kv[key] = (value, None if ttl is None else now + ttl)

    async def kv_get(self, key: str) -> bytes | None:
        """Return the value of a live key, or None."""
        return self._live_value(key, time.monotonic())

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Return every live key starting with `prefix` with its value."""
        now = time.monotonic()
        keys = [key for key in self._kv if key.startswith(prefix)]
        found = {key: self._live_value(key, now) for key in keys}
        return {key: value for key, value in found.items() if value is not None}

    async def kv_delete(self, key: str) -> None:
        """Delete a key if present."""
        self._kv.pop(key, None)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key and return the new value.

        `ttl` applies when the call creates the key; a live key keeps its expiry.
        """
        now = time.monotonic()
        current = self._live_value(key, now)
        try:
            value = amount + (0 if current is None else int(current))
        except ValueError:
            raise BrokerError(f"kv key {key!r} does not hold an integer") from None
        expires_at = self._kv[key][1] if current is not None else None
        if current is None and ttl is not None:
            expires_at = now + ttl
        self._kv[key] = (str(value).encode(), expires_at)
        return value

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; `ttl` renews its expiry."""
        now = time.monotonic()
        members, expires_at = self._sets.get(key) or (set(), None)
        if expires_at is not None and expires_at <= now:
            members, expires_at = set(), None
        members.add(member)
        self._sets[key] = (members, expires_at if ttl is None else now + ttl)
        return len(members)

    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period`.

        Returns 0.0 when granted, else the seconds until the oldest grant leaves the window.
        """
        if limit < 1 or period <= 0:
            raise ConfigurationError(
                f"a rate limit needs limit >= 1 and period > 0: {limit}/{period}"
            )
        now = time.monotonic()
        self._sweep(now)
        _, grants = self._grants.get(key) or (period, deque())
        while grants and grants[0] <= now - period:
            grants.popleft()
        self._grants[key] = (period, grants)
        if len(grants) < limit:
            grants.append(now)
            return 0.0
        return max(grants[0] + period - now, 1e-6)
