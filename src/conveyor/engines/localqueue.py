"""An in-process queue: the memory engine's transport, and the per-worker queue of ZeroMQ.

Plain asyncio, in this process's memory; nothing survives a restart.

Each queue keeps two heaps: `ready` (priority desc, then available time, then publish order) and
`timers` (messages that become available later: an ETA, a retry delay or the end of a lease).
Heap entries carry the message's version, so an entry made stale by a later change is skipped
when it surfaces instead of being searched for. `receive` sleeps until a publish or release
wakes it, or until the earliest timer of the queues it reads: it never polls.

Publishing a `task_id` that is already held is ignored: the first copy stays. Used from one
event loop (the memory engine's, or the ZeroMQ engine's I/O thread): it needs no lock.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.engines.base import (
    DeadLetter,
    Delivery,
    Location,
    MessageTransport,
    Outgoing,
    QueueStats,
)
from conveyor.engines.loops import Signal

__all__ = ["LocalQueue"]

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
    version: int = 0

    def running(self, now: float) -> bool:
        return self.leased and self.available_at > now

    def location(self, now: float) -> Location:
        if self.running(now):
            return "leased"
        return "delayed" if self.available_at > now else "waiting"


@dataclass(slots=True)
class _Queue:
    ready: list[_ReadyEntry] = field(default_factory=list)
    timers: list[_TimerEntry] = field(default_factory=list)


class LocalQueue(MessageTransport):
    """Queues, leases and dead letters in this process's memory.

    Args:
        lease_seconds: how long a delivery stays leased without `extend`.
    """

    thread_safe = False  # one event loop's: the worker of `InMemoryBroker` renews on it

    def __init__(self, lease_seconds: float = 30.0) -> None:
        self.lease_seconds = lease_seconds
        self.safe_url = "memory://"
        self._messages: dict[str, _Message] = {}
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count()
        self._wakeup = Signal()
        self._dead: dict[str, DeadLetter] = {}

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
            msg.leased = True
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

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` seconds."""
        msg = self._held(delivery)
        if msg is None:
            return
        now = time.time()
        msg.body = msg.body if body is None else body
        msg.leased = False
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
        self._dead.pop(msg.task_id, None)  # a second failure goes to the end of the list
        self._dead[msg.task_id] = DeadLetter(
            msg.task_id, msg.queue, msg.body, reason, priority=msg.priority
        )

    # -- admin reads and operations -------------------------------------------------------

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is, or None when it is not held."""
        msg = self._messages.get(task_id)
        return None if msg is None else msg.location(time.time())

    async def remove(self, task_id: str) -> bool:
        """Drop a waiting or delayed message; False when it is leased or not held."""
        msg = self._messages.get(task_id)
        if msg is None or msg.running(time.time()):
            return False
        del self._messages[task_id]
        return True

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
        """Dead-lettered messages, oldest first."""
        return list(itertools.islice(self._dead.values(), max(limit, 0)))

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Forget these dead letters (a later one of the same id stays); how many were held."""
        dropped = [d for d in letters if self._dead.get(d.task_id) is d]
        for letter in dropped:
            del self._dead[letter.task_id]
        return len(dropped)
