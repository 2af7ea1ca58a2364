"""`AmqpAdmin`: the operations of the RabbitMQ transport beyond moving messages: where a message
is, removing it, counts, purge, dead letters, teardown. Each runs on the connection's thread.

Where messages are comes from the index (`records.py`), never from RabbitMQ. Dead letters are
read with `basic.get` on a channel of their own that is then closed, so RabbitMQ puts every
unacked one back in its place: listing takes nothing away, and `drop_dead` acks only the ones
it was given.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from conveyor.engines.amqp.delivered import cancel
from conveyor.engines.amqp.link import AmqpLink, on_io
from conveyor.engines.amqp.records import DROPPED, Record
from conveyor.engines.base import DeadLetter, Location, QueueStats

__all__ = ["AmqpAdmin"]

#: `QueueStats` column of each location: ready, scheduled, running.
_COLUMN = {"waiting": 0, "delayed": 1, "leased": 2}


def _letter(message: Any, queue: str) -> DeadLetter:
    headers = message.headers or {}
    priority, failed_ms = headers.get("x-priority"), headers.get("x-failed-at-ms")
    failed_ms = failed_ms if isinstance(failed_ms, int) else 0
    return DeadLetter(
        task_id=message.message_id or "",
        queue=str(headers.get("x-queue") or queue),
        body=message.body,
        reason=str(headers.get("x-reason") or "dead-lettered by RabbitMQ"),
        failed_at=failed_ms / 1000,
        priority=priority if isinstance(priority, int) else 0,
        ref=_ref(message, queue),
    )


def _ref(message: Any, queue: str) -> tuple[str, str, Any]:
    """What tells one dead letter from another: RabbitMQ gives a message no lasting id, so its
    dead queue, task id and failure time (ms) do."""
    return queue, message.message_id or "", (message.headers or {}).get("x-failed-at-ms")


class AmqpAdmin(AmqpLink):
    """The admin reads and operations of `AmqpTransport` (see there for the arguments)."""

    @on_io
    async def locate(self, task_id: str) -> Location | None:
        """Where the index says the message is, or None."""
        record = await self._record(task_id)
        return None if record is None else record.where(time.time())

    @on_io
    async def remove(self, task_id: str) -> bool:
        """Mark a waiting or delayed record dropped (its message is dropped when delivered);
        False when it is leased or not indexed."""
        now = time.time()
        record = await self._record(task_id)
        if record is None or record.where(now) not in ("waiting", "delayed"):
            return False
        await self._put(task_id, record.with_(state=DROPPED), now)
        return True

    async def _records(self) -> dict[str, Record]:
        """Every record of the index by task id."""
        start = len(self._key("m", ""))
        found = await self.store.scan(self._key("m", ""))
        return {k[start:]: r for k, raw in found.items() if (r := Record.decode(raw)) is not None}

    @on_io
    async def queue_stats(self) -> list[QueueStats]:
        """Ready, scheduled and running counts of each queue, from the index.

        Read on the connection's thread, like settles, so a count never sees an ack whose
        caller has not yet been told it is done.
        """
        now = time.time()
        counts: dict[str, list[int]] = {}
        for record in (await self._records()).values():
            where = record.where(now)
            if where is not None:
                counts.setdefault(record.queue, [0, 0, 0])[_COLUMN[where]] += 1
        return [QueueStats(name, *counts[name]) for name in sorted(counts)]

    @on_io
    async def purge(self, queue: str | None = None) -> int:
        """Mark waiting and delayed records dropped and purge RabbitMQ's ready messages of the
        queue(s); running ones stay.

        Returns the number of messages the index knew, or what RabbitMQ purged when the index
        (a per-process state store) knew fewer.
        """
        now = time.time()
        async with self._own_channel() as channel:  # fails at once while RabbitMQ is away
            doomed = {
                task_id: r
                for task_id, r in (await self._records()).items()
                if (queue is None or r.queue == queue) and r.where(now) in ("waiting", "delayed")
            }
            for task_id, record in doomed.items():
                await self._put(task_id, record.with_(state=DROPPED), now)
            purged = 0
            for name in [queue] if queue is not None else await self._known_queues():
                await self._declare(name)
                found = await channel.get_queue(self.queue_name(name), ensure=False)
                purged += int((await found.purge()).message_count or 0)
        return max(len(doomed), purged)

    @contextlib.asynccontextmanager
    async def _own_channel(self) -> AsyncIterator[Any]:
        """A channel of its own, closed at the end: what it got unacked goes back in its place."""
        await self._ready()
        channel = await self._conn.channel()
        try:
            yield channel
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    @contextlib.asynccontextmanager
    async def _dead(self, queue: str, limit: int | None) -> AsyncIterator[list[Any]]:
        """Up to `limit` dead letters of `queue`, got unacked on a channel of their own."""
        async with self._own_channel() as channel:
            await self._declare(queue)
            dead = await channel.declare_queue(f"{self.queue_name(queue)}.dead", durable=True)
            got: list[Any] = []
            while limit is None or len(got) < limit:
                message = await dead.get(no_ack=False, fail=False)
                if message is None:
                    break
                got.append(message)
            yield got

    @on_io
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of every queue, oldest first; none is taken away."""
        letters: list[DeadLetter] = []
        for queue in await self._known_queues():
            async with self._dead(queue, max(limit, 0)) as got:
                letters.extend(_letter(message, queue) for message in got)
        letters.sort(key=lambda letter: letter.failed_at)
        return letters[: max(limit, 0)]

    @on_io
    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Ack these dead letters off their dead queues (matched by task id and failure time, so
        a later letter of the same id stays); how many."""
        wanted = Counter(d.ref for d in letters if isinstance(d.ref, tuple))
        dropped = 0
        for queue in sorted({ref[0] for ref in wanted}):
            async with self._dead(queue, None) as got:
                for message in got:
                    ref = _ref(message, queue)
                    if wanted[ref] > 0:
                        await message.ack()
                        wanted[ref] -= 1
                        dropped += 1
        return dropped

    @on_io
    async def delete_topology(self) -> None:
        """Delete this prefix's queues, dead-letter queues, delay buckets and exchanges, and the
        index, queue and bucket notes in the state store (tests, teardown)."""
        async with self._own_channel() as channel:
            for consumer, tag in self._consuming.values():
                await cancel(consumer, tag)
            for queue in await self._known_queues():
                for name in (self.queue_name(queue), f"{self.queue_name(queue)}.dead"):
                    await channel.queue_delete(name)
            for key in await self.store.scan(self._key("d", "")):  # noted by `_bucket`
                bucket = f"{self.prefix}.delay.{key.rpartition(':d:')[2]}"
                await channel.queue_delete(bucket)
                await channel.exchange_delete(bucket)
            await channel.exchange_delete(f"{self.prefix}.dead")
        for kind in ("m", "q", "d"):
            for key in await self.store.scan(self._key(kind, "")):
                await self.store.delete(key)
        self._queues, self._consuming, self._buckets = {}, {}, set()
