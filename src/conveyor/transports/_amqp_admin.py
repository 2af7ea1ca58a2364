"""Operations of `AmqpTransport` beyond moving messages: cancels, states, counts, purge, dead
letters, teardown. Each runs on the transport's connection thread.

Dead letters are read with `basic.get` on a channel of their own that is then closed, so
RabbitMQ puts every unacked one back in its place: listing takes nothing away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.transports._amqp_records import DROPPED, MAX_BUCKET, Record, new_tag
from conveyor.transports.base import DeadLetter, QueueStats

if TYPE_CHECKING:
    from conveyor.transports.amqp import AmqpTransport

__all__ = [
    "cancel",
    "cancel_requested",
    "dead_letters",
    "delete_topology",
    "purge",
    "queue_stats",
    "records",
    "requeue_dead",
    "state",
]

_CANCEL_TTL = 3600.0


async def cancel(transport: AmqpTransport, task_id: str) -> bool:
    """Mark a waiting message dropped (True), or note a cancel request for its worker (False)."""
    now = time.time()
    record = Record.decode(await transport.state_store.kv_get(transport._key("m", task_id)))
    if record is not None and record.where(now) not in (None, "running"):
        await transport._put(task_id, record.with_(state=DROPPED), now)
        return True
    await transport.state_store.kv_set(transport._key("c", task_id), b"1", _CANCEL_TTL)
    return False


async def cancel_requested(transport: AmqpTransport, task_ids: Sequence[str]) -> set[str]:
    """Which of these task ids have a cancel request."""
    store = transport.state_store
    found = await asyncio.gather(*(store.kv_get(transport._key("c", t)) for t in task_ids))
    return {task_id for task_id, v in zip(task_ids, found, strict=True) if v is not None}


async def state(transport: AmqpTransport, task_id: str) -> str | None:
    """Where the index says the message is, or None."""
    record = Record.decode(await transport.state_store.kv_get(transport._key("m", task_id)))
    return None if record is None else record.where(time.time())


async def records(transport: AmqpTransport) -> dict[str, Record]:
    """Every record of the index by task id."""
    found = await transport.state_store.kv_scan(transport._key("m", ""))
    start = len(transport._key("m", ""))
    return {k[start:]: r for k, raw in found.items() if (r := Record.decode(raw)) is not None}


async def queue_stats(transport: AmqpTransport) -> list[QueueStats]:
    """Ready, scheduled and running counts of each queue, from the index."""
    now = time.time()
    counts: dict[str, list[int]] = {}
    for record in (await records(transport)).values():
        where = record.where(now)
        if where is None:
            continue
        row = counts.setdefault(record.queue, [0, 0, 0])
        row[2 if where == "running" else 1 if where in ("scheduled", "retrying") else 0] += 1
    return [QueueStats(name, *counts[name]) for name in sorted(counts)]


async def purge(transport: AmqpTransport, queue: str | None) -> int:
    """Mark waiting records dropped and purge RabbitMQ's ready messages of the queue(s).

    Returns the number of waiting messages the index knew, or what RabbitMQ purged when the
    index (a per-process state store) knew fewer.
    """
    now = time.time()
    doomed = {
        task_id: r
        for task_id, r in (await records(transport)).items()
        if (queue is None or r.queue == queue) and r.where(now) not in (None, "running")
    }
    for task_id, record in doomed.items():
        await transport._put(task_id, record.with_(state=DROPPED), now)
    purged = 0
    for name in [queue] if queue is not None else await transport._known_queues():
        declared = await transport._declare(name)
        result = await declared.purge()
        purged += int(result.message_count or 0)
    return max(len(doomed), purged)


async def _read_dead(
    transport: AmqpTransport, queue: str, limit: int | None
) -> tuple[Any, list[Any]]:
    """Open a channel and `basic.get` up to `limit` dead letters of `queue` (unacked)."""
    await transport._ready()
    channel = await transport._conn.channel()
    got: list[Any] = []
    try:
        await transport._declare(queue)
        dead = await channel.declare_queue(f"{transport.queue_name(queue)}.dead", durable=True)
        while limit is None or len(got) < limit:
            message = await dead.get(no_ack=False, fail=False)
            if message is None:
                break
            got.append(message)
    except BaseException:
        with contextlib.suppress(Exception):
            await channel.close()  # what it got goes back in its place
        raise
    return channel, got


def _letter(message: Any, queue: str) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(
        task_id=message.message_id or "",
        queue=str(headers.get("x-queue") or queue),
        body=message.body,
        reason=str(headers.get("x-reason") or "dead-lettered by RabbitMQ"),
        failed_at=int(headers.get("x-failed-at-ms") or 0) / 1000,
    )


async def dead_letters(transport: AmqpTransport, limit: int) -> list[DeadLetter]:
    """Dead letters of every queue, oldest first; none is taken away."""
    letters: list[DeadLetter] = []
    for queue in await transport._known_queues():
        channel, got = await _read_dead(transport, queue, max(limit, 0))
        letters.extend(_letter(message, queue) for message in got)
        with contextlib.suppress(Exception):
            await channel.close()  # every unacked dead letter goes back in its place
    letters.sort(key=lambda letter: letter.failed_at)
    return letters[: max(limit, 0)]


async def requeue_dead(transport: AmqpTransport, task_ids: Sequence[str] | None) -> int:
    """Publish chosen dead letters back to their queues, then ack them off the dead queue."""
    wanted = None if task_ids is None else set(task_ids)
    moved = 0
    now = time.time()
    for queue in await transport._known_queues():
        channel, got = await _read_dead(transport, queue, None)
        try:
            for message in got:
                if wanted is not None and message.message_id not in wanted:
                    continue
                letter = _letter(message, queue)
                priority = int((message.headers or {}).get("x-priority") or 0)
                record = Record("queued", 0, 0.0, 0.0, priority, letter.queue, new_tag())
                await transport._put(letter.task_id, record, now)
                await transport._send(
                    letter.queue, letter.task_id, letter.body, priority, None, 0, record.tag
                )
                await message.ack()
                moved += 1
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
    return moved


async def delete_topology(transport: AmqpTransport) -> None:
    """Delete this prefix's queues, dead-letter queues, delay buckets and exchanges, and the
    index, queue and bucket notes in the state store."""
    store = transport.state_store
    await transport._ready()
    for queue, tag in transport._consuming.items():
        await transport._queues[queue].cancel(tag)
    channel = await transport._conn.channel()
    prefix = transport.prefix
    try:
        for queue in await transport._known_queues():
            for name in (transport.queue_name(queue), f"{transport.queue_name(queue)}.dead"):
                await channel.queue_delete(name)
        buckets = await store.kv_scan(transport._key("d", ""))
        for k in sorted(
            {int(key.rpartition(":d:")[2]) for key in buckets} & set(range(MAX_BUCKET + 1))
        ):
            await channel.queue_delete(f"{prefix}.delay.{k}")
            await channel.exchange_delete(f"{prefix}.delay.{k}")
        await channel.exchange_delete(f"{prefix}.dead")
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    for kind in ("m", "q", "d", "c"):
        for key in await store.kv_scan(transport._key(kind, "")):
            await store.kv_delete(key)
    transport._queues.clear()
    transport._consuming.clear()
    transport._buckets.clear()
