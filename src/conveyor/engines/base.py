"""The three contracts every engine implements: a message transport, a state store and a result
store. Everything above them (retries, cancellation, task status, deduplication, rate limits,
workflows, schedules, heartbeats, dead-letter requeue) is written once, in `conveyor.state` and
the modules that use it, on these primitives alone. `docs/internals.md` shows them with the key
schema and how to add an engine.

`MessageTransport` keeps these promises on every engine:

* `publish` is durable when it returns; a message with an `eta` is not delivered before it; a
  `task_id` the transport still holds (waiting, delayed or leased) is not published twice
  (NATS holds an id per queue and priority, and apart for delayed and ready messages: see
  "Limits" in `docs/engines/nats.md`).
* `receive` leases each delivery to this consumer for `lease_seconds`; a lease that is neither
  extended nor settled expires and the message is delivered again (to anyone).
* A delivery is settled once: `ack` (done, removed), `release` (back, perhaps with a new body
  and a delay) or `dead_letter` (kept aside). Settling a delivery whose lease was lost to a later
  delivery does nothing.
* Within a queue, a higher `priority` is delivered first, then the longer waiting.
* `receive` never fails a batch for one entry it cannot read: that entry comes back as a
  `Delivery` with its `problem`, and the worker dead-letters it with that reason.

`StateStore` keys are plain strings in one namespace per app (the engine adds its prefix); a
value with a `ttl` reads as absent once it has expired. Each method is atomic on its own.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from conveyor.errors import BrokerConnectionError, ConfigurationError

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DeadLetter",
    "Delivery",
    "Engine",
    "Location",
    "MessageTransport",
    "Outgoing",
    "Publisher",
    "QueueStats",
    "ResultBackend",
    "StateStore",
    "StreamChunk",
]


#: Seconds a delivery stays leased without `extend` when neither the URL nor the caller says.
#: A worker renews every third of it, from a thread of its own; a worker that dies has its
#: messages handed out again about this long after its last renewal.
DEFAULT_LEASE_SECONDS: Final = 8.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish.

    Attributes:
        task_id: the message's id; an id the transport still holds is not published again.
        queue: queue name.
        body: the encoded (and perhaps signed) message.
        priority: 0-9, higher first.
        eta: unix time before which the message is not delivered; None for now.
    """

    task_id: str
    queue: str
    body: bytes
    priority: int = 0
    eta: float | None = None

    @property
    def band(self) -> int:
        """`priority` clamped to 0-9: the priority band an engine keeps the message in."""
        return min(max(int(self.priority), 0), 9)


#: Publishes messages somewhere particular: what `MessageTransport.transactional` returns.
Publisher = Callable[[Sequence[Outgoing]], Awaitable[None]]


@dataclass(slots=True)
class Delivery:
    """A message leased to this consumer.

    Attributes:
        task_id: the message's id ("" when the entry carried none).
        queue: the queue it came from.
        body: the bytes published.
        deliveries: how many times it has been handed out, this time included.
        receipt: the engine's handle to settle it with.
        problem: why the entry cannot be run (a malformed entry); None for a good one. A
            delivery with a problem is dead-lettered with it and never run.
    """

    task_id: str
    queue: str
    body: bytes
    deliveries: int = 1
    receipt: Any = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue for `conveyor info`, the dashboard and `wait_all`."""

    name: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the worker gave up on, with why.

    Attributes:
        ref: the engine's handle to this letter, for `drop_dead` (None for one not read from it).
    """

    task_id: str
    queue: str
    body: bytes
    reason: str
    failed_at: float = field(default_factory=time.time)
    priority: int = 0
    ref: Any = field(default=None, compare=False, repr=False)


#: Where a transport holds a message: ready to be handed out, waiting for its time (an ETA, a
#: retry delay), or leased to a consumer.
Location = Literal["waiting", "delayed", "leased"]


class MessageTransport(abc.ABC):
    """Moves encoded messages between producers and workers with leases."""

    #: Seconds a delivery stays leased without `extend`.
    lease_seconds: float = DEFAULT_LEASE_SECONDS

    #: The URL with any password replaced by `***`, for logs and errors.
    safe_url: str = ""

    #: False when `locate` cannot see every message (ZeroMQ sees only this process's): workers
    #: then record a running task's status in the state store as well.
    locates: bool = True

    #: True when its methods may run at once from event loops in several threads: a worker then
    #: renews its leases from a thread of its own (`conveyor.worker.leases`).
    thread_safe: bool = True

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
    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries that are still running."""

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries as done: they are never delivered again."""

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store a final result (when `data` is given), then ack: a settled task has its result.

        An engine whose own result store is `results` may do both in one round trip.
        """
        if data is not None:
            await results.set_result(delivery.task_id, data, ttl)
        await self.ack([delivery])

    @abc.abstractmethod
    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a delivery back, with a new body when given, not before `delay` seconds."""

    @abc.abstractmethod
    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Settle a delivery by keeping it aside with `reason`, for an operator."""

    def transactional(self, connection: object) -> Callable[[Sequence[Outgoing]], Awaitable[None]]:
        """A publisher that writes messages inside the caller's open transaction on
        `connection`: consumers see them only once it commits, and never after a rollback.

        Raises:
            ConfigurationError: the engine cannot (every engine but PostgreSQL), or
                `connection` is not one it can use.
        """
        engine = urlsplit(self.safe_url).scheme or type(self).__name__
        raise ConfigurationError(
            f"the {engine} engine cannot enqueue in your transaction: with_connection needs"
            " the PostgreSQL engine (postgresql://)"
        )

    # -- admin reads and operations -------------------------------------------------------

    async def describe(self) -> str | None:
        """Where this engine keeps its data, for `conveyor info`, when the URL does not say it
        all (a schema and its version); None otherwise."""
        return None

    @abc.abstractmethod
    async def locate(self, task_id: str) -> Location | None:
        """Where the transport holds the message, or None when it does not hold it."""

    @abc.abstractmethod
    async def remove(self, task_id: str) -> bool:
        """Delete a waiting or delayed message; False when it is leased or not held."""

    @abc.abstractmethod
    async def queue_stats(self) -> list[QueueStats]:
        """Counts of every queue that holds messages."""

    @abc.abstractmethod
    async def purge(self, queue: str | None = None) -> int:
        """Delete the waiting and delayed (not leased) messages of one queue or all; how many."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first."""

    @abc.abstractmethod
    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters, as `dead_letters` returned them; how many were deleted.

        A letter the same task id got since (it failed again) stays.
        """


class StateStore(abc.ABC):
    """Small atomic state shared by every process of an app: the primitives `conveyor.state`
    builds cancel requests, task status, deduplication, rate limits, claims and heartbeats on."""

    #: The URL with any password replaced by `***`, for logs and errors.
    safe_url: str = ""

    #: False when the store lives in this process only (the memory engine's): what it keeps is
    #: then per-process, which an engine that relies on it should say.
    shared: bool = True

    async def startup(self) -> None:
        """Open connections; safe to call twice."""

    async def shutdown(self) -> None:
        """Close connections."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order, None for each absent one."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, replacing any value, expiring after `ttl` seconds when given."""

    @abc.abstractmethod
    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if it is absent (or expired); True when this call stored it."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key (0 when absent) and return the new value.

        `ttl` applies when the call creates the key; a live key keeps its expiry.

        Raises:
            BrokerError: the key holds something other than an integer.
        """

    @abc.abstractmethod
    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""

    @abc.abstractmethod
    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` (again changes nothing) and return the set's size.

        `ttl`, when given, is the whole set's expiry, renewed by each call.
        """

    @abc.abstractmethod
    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of at most `limit` grants in any window of `period` seconds.

        Returns 0.0 when granted, else the seconds until the oldest grant leaves the window.

        Raises:
            ConfigurationError: `limit` is below 1 or `period` is not positive (`check_window`).
        """


#: Longest sleep between two reads of a result whose store announces results.
_RECHECK_SECONDS = 1.0

#: Items of a generator task read from `read_stream`: (next offset, items, finished).
StreamChunk = tuple[int, list[bytes], bool]


class ResultBackend(abc.ABC):
    """Keeps each task's final result, its progress and the items it streams, by task id.

    Stores hold bytes; the broker encodes with its serializer. `wait_result` must not spin:
    engines that can block do, the others back off between reads.
    """

    #: Seconds a result is kept when the task sets no `result_ttl`; None keeps it forever.
    default_ttl: float | None = 24 * 3600.0

    async def startup(self) -> None:
        """Open connections; safe to call twice."""

    async def shutdown(self) -> None:
        """Close connections."""

    @abc.abstractmethod
    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the final result of a task, replacing any earlier one."""

    @abc.abstractmethod
    async def get_result(self, task_id: str) -> bytes | None:
        """The stored result, or None when there is none (yet)."""

    async def watch(
        self, task_id: str, wake: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Have `wake()` called once `task_id`'s result is stored; return what stops that, or
        None when the store announces nothing (or cannot now: its server is away).

        Engines whose server can announce a stored result (Redis pub/sub, a NATS subject)
        override this; `wait_result` then sleeps until told instead of reading again and again.
        """
        return None

    async def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """The result once stored, or None after `timeout` seconds.

        Between reads it sleeps until `watch` says the result is stored (reading again every
        second, in case an announcement was lost to a reconnect), or without one for a growing
        pause (1 ms to 50 ms). A lost connection is ridden out until the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        stored = asyncio.Event()
        unwatch: Callable[[], Awaitable[None]] | None = None
        pause = 0.001
        try:
            while True:
                unwatch = unwatch or await self.watch(task_id, stored.set)
                data = await self._read_until(task_id, deadline)
                if data is not None:
                    return data
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                wait = _RECHECK_SECONDS if unwatch is not None else pause
                pause = min(pause * 2, 0.05)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stored.wait(), wait if left is None else min(wait, left))
                stored.clear()
        finally:
            if unwatch is not None:
                await unwatch()

    async def _read_until(self, task_id: str, deadline: float | None) -> bytes | None:
        """`get_result`, tried again through connection failures until the deadline."""
        while True:
            try:
                return await self.get_result(task_id)
            except BrokerConnectionError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.5)

    @abc.abstractmethod
    async def delete(self, task_id: str) -> None:
        """Forget the result, progress and stream of a task."""

    @abc.abstractmethod
    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report of a running task."""

    @abc.abstractmethod
    async def get_progress(self, task_id: str) -> bytes | None:
        """The latest progress report, or None."""

    @abc.abstractmethod
    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append items produced by a generator task."""

    @abc.abstractmethod
    async def reset_stream(self, task_id: str) -> None:
        """Drop a task's stream: a redelivered generator task starts its stream afresh."""

    @abc.abstractmethod
    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark a task's stream as finished; readers stop after the last item."""

    @abc.abstractmethod
    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Items from `offset` on, the offset to read next, and whether the stream is closed."""


@dataclass(frozen=True, slots=True)
class Engine:
    """What an engine package's `open_engine(url, **options)` makes: the parts it has, sharing
    one connection where they can. `conveyor.engines.registry` fills the parts an engine lacks
    (a RabbitMQ broker's state store and results) from another engine's URL."""

    transport: MessageTransport | None = None
    store: StateStore | None = None
    results: ResultBackend | None = None
