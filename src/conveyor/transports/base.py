"""The transport contract: the few async primitives every engine provides.

Everything above it (retries, deduplication, rate limits, cancellation, workflows, schedules) is
written once in terms of these methods. Semantics every engine must keep:

* `publish` is durable when it returns; a message with an `eta` is not delivered before it.
* `receive` leases each delivery to this consumer for `lease_seconds`; a lease that is not
  extended or settled expires and the message is delivered again (to anyone).
* A delivery is settled exactly once: `ack` (done, removed), `release` (back to the queue,
  possibly with a new body and a delay) or `dead_letter` (kept aside for an operator).
* Within a queue, higher `priority` is delivered first, then older `available` time.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.results.base import ResultBackend

__all__ = [
    "DeadLetter",
    "Delivery",
    "Outgoing",
    "QueueStats",
    "Transport",
    "TransportState",
]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish.

    Attributes:
        task_id: the message's id; publishing an id that is already queued replaces nothing
            and adds a second copy only if the engine cannot tell (SQLite and memory ignore it).
        queue: queue name.
        body: the encoded (and maybe signed) message.
        priority: 0-9, higher first.
        eta: unix time before which the message is not delivered; None for now.
    """

    task_id: str
    queue: str
    body: bytes
    priority: int = 0
    eta: float | None = None


@dataclass(slots=True)
class Delivery:
    """A message leased to this consumer.

    Attributes:
        task_id: the message's id.
        queue: the queue it came from.
        body: the bytes published.
        deliveries: how many times it has been handed out, this time included.
        receipt: engine-specific handle used to settle it.
    """

    task_id: str
    queue: str
    body: bytes
    deliveries: int = 1
    receipt: Any = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue for `conveyor info` and the dashboard."""

    name: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the worker gave up on, with why."""

    task_id: str
    queue: str
    body: bytes
    reason: str
    failed_at: float = field(default_factory=time.time)


#: Where a message is, as a transport can tell: "queued", "scheduled", "running", "retrying".
TransportState = str


class Transport(abc.ABC):
    """Moves encoded messages between producers and workers, and keeps small atomic state."""

    #: Seconds a delivery stays leased without `extend`.
    lease_seconds: float = 30.0

    #: The URL with any password replaced by `***`, for logs and errors.
    safe_url: str = ""

    #: True when `state()` knows queued/scheduled/running/retrying, so workers need not record
    #: "running" in the result store for every task.
    tracks_state: bool = False

    async def startup(self) -> None:
        """Open connections and create what the engine needs; safe to call twice."""

    async def shutdown(self) -> None:
        """Close connections; pending publishes are flushed first."""

    # -- messages -------------------------------------------------------------------------

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Durably enqueue messages, in one round trip where the engine allows."""

    @abc.abstractmethod
    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` ready messages, waiting up to `timeout` seconds for one.

        An empty `queues` means every queue (the in-process worker of `InMemoryBroker`).
        """

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries as done: they are never delivered again."""

    @abc.abstractmethod
    async def release(
        self,
        delivery: Delivery,
        *,
        body: bytes | None = None,
        delay: float = 0.0,
        retrying: bool = False,
    ) -> None:
        """Put a delivery back, optionally with a new body and not before `delay` seconds.

        `retrying` marks it as waiting for a retry (its state reads "retrying").
        """

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store a final result (when `data` is given), then ack: a settled task has its result.

        Engines that keep results next to their messages do both in one round trip.
        """
        if data is not None:
            await results.set_result(delivery.task_id, data, ttl)
        await self.ack([delivery])

    @abc.abstractmethod
    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries that are still running."""

    @abc.abstractmethod
    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Settle a delivery by moving it to the dead-letter store."""

    # -- cancellation and state -----------------------------------------------------------

    @abc.abstractmethod
    async def cancel(self, task_id: str) -> bool:
        """Remove a queued message and remember the request for a running one.

        Returns True when a waiting message was removed before it ran.
        """

    @abc.abstractmethod
    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Return which of these (running) task ids were asked to cancel."""

    @abc.abstractmethod
    async def state(self, task_id: str) -> TransportState | None:
        """Return where the message is, or None when the transport does not hold it."""

    # -- inspection and operations ----------------------------------------------------------

    @abc.abstractmethod
    async def queue_stats(self) -> list[QueueStats]:
        """Return counts for every queue that holds messages."""

    @abc.abstractmethod
    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting (not running) messages of one queue or all; return how many."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead-lettered messages, oldest first."""

    @abc.abstractmethod
    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead-lettered messages (all when None) back to their queues; return how many."""

    # -- small atomic state (dedup, rate limits, counters, heartbeats) ----------------------

    @abc.abstractmethod
    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent (or expired); return True when this call stored it."""

    @abc.abstractmethod
    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `key`, replacing any value, expiring after `ttl` seconds when given."""

    @abc.abstractmethod
    async def kv_get(self, key: str) -> bytes | None:
        """Return the value of a live key, or None."""

    @abc.abstractmethod
    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Return every live key starting with `prefix` with its value."""

    @abc.abstractmethod
    async def kv_delete(self, key: str) -> None:
        """Delete a key if present."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add `amount` to an integer key (0 when absent) and return the new value."""

    @abc.abstractmethod
    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Atomically add `member` to the set at `key` (adding it again changes nothing) and
        return the set's size.

        `ttl` (seconds), when given, is the whole set's expiry, renewed by each call. Workflows
        count finished group members with it: a redelivered member counts once.
        """

    @abc.abstractmethod
    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one token of a global bucket of `limit` per `period` seconds.

        Returns 0.0 when taken, else the seconds to wait before a token is free.
        """
