"""Operations of the NATS transport outside the hot path: cancel, state, counts, purge, dead
letters."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from conveyor.errors import BrokerError
from conveyor.transports._nats_client import CANCEL_SECONDS, NatsClient
from conveyor.transports._nats_conn import Msg, escape, unescape
from conveyor.transports._nats_publish import CLAIM_SECONDS, NatsPublishing
from conveyor.transports.base import DeadLetter, Delivery, QueueStats, TransportState

if TYPE_CHECKING:
    from conveyor.transports._nats_state import NatsState

__all__ = ["NatsOperations"]

_PURGE_BATCH = 256


class NatsOperations(NatsPublishing):
    """Cancellation, state, counts, purge and dead letters of `NatsTransport`."""

    client: NatsClient
    meta: NatsState
    settling: Counter[str]
    cancels_seen: dict[str, float]

    # -- counts -------------------------------------------------------------------------------

    async def _task_counts(self) -> dict[tuple[str, int], int]:
        """Messages (waiting and running) per (queue token, band)."""
        counts = await self.client.subject_counts("tasks", self.client.subject("q", ">"))
        found: dict[tuple[str, int], int] = {}
        for subject, n in counts.items():
            _, _, qtok, band = subject.split(".")
            found[(qtok, int(band))] = n
        return found

    async def _delayed_counts(self) -> dict[str, int]:
        counts = await self.client.subject_counts("delayed", self.client.subject("d", ">"))
        return {subject.split(".")[2]: n for subject, n in counts.items()}

    async def _running(self) -> dict[tuple[str, int], int]:
        """Leased, unacked messages per (queue token, band), from the consumers' state."""
        running: dict[tuple[str, int], int] = {}
        offset = 0
        while True:
            page = await self.client.api(
                f"CONSUMER.LIST.{self.client.stream('tasks')}", {"offset": offset}
            )
            consumers: list[dict[str, Any]] = page.get("consumers") or []
            for info in consumers:
                qtok, _, band = info["name"].rpartition("-")
                running[(qtok, int(band))] = int(info.get("num_ack_pending", 0))
            offset += len(consumers)
            if not consumers or offset >= int(page.get("total", 0)):
                return running

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of every queue that holds messages."""
        tasks, delayed, running = await asyncio.gather(
            self._task_counts(), self._delayed_counts(), self._running()
        )
        totals: dict[str, list[int]] = {}
        for (qtok, band), n in tasks.items():
            busy = min(running.get((qtok, band), 0), n)
            counts = totals.setdefault(qtok, [0, 0, 0])
            counts[0] += n - busy
            counts[2] += busy
        for qtok, n in delayed.items():
            totals.setdefault(qtok, [0, 0, 0])[1] += n
        for queue, n in self.settling.items():
            counts = totals.setdefault(escape(queue), [0, 0, 0])
            counts[2] = max(counts[2], n)
        return [
            QueueStats(unescape(qtok), ready, scheduled, busy)
            for qtok, (ready, scheduled, busy) in sorted(totals.items())
            if ready or scheduled or busy
        ]

    # -- purge --------------------------------------------------------------------------------

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting messages of one queue or all; running ones are kept.

        Waiting messages are leased through the queue's consumers and acked (a message handed
        out before is running, and is left leased to come back after its lease); delayed ones
        are purged by subject.
        """
        wanted = None if queue is None else escape(queue)
        tasks, delayed = await asyncio.gather(self._task_counts(), self._delayed_counts())
        removed = 0
        for qtok, band in tasks:
            if wanted is None or qtok == wanted:
                removed += await self._drain(qtok, band)
        for qtok in delayed:
            if wanted is None or qtok == wanted:
                removed += await self._purge_delayed(qtok)
        return removed

    async def _purge_delayed(self, qtok: str) -> int:
        """Purge a queue's delayed messages and the index entries pointing at them."""
        subject = self.client.subject("d", qtok)
        task_ids, seq = [], 1
        while (stored := await self.client.get_seq("delayed", seq, subject)) is not None:
            task_ids.append(unescape(stored.headers.get("Conveyor-Task", "=")))
            seq = stored.seq + 1
        removed = await self.client.purge("delayed", subject)
        forget = [self.meta.delete_later(t) for t in task_ids]
        await asyncio.gather(*forget)
        return removed

    async def _drain(self, qtok: str, band: int) -> int:
        name = await self._consumer(qtok, band)
        removed = 0
        while True:
            msgs = await self.client.pull("tasks", name, _PURGE_BATCH)
            fresh = [m for m in msgs if int(m.metadata.num_delivered) == 1]
            await asyncio.gather(*(self._forget(m) for m in fresh))
            removed += len(fresh)
            if len(msgs) < _PURGE_BATCH:
                return removed

    async def _forget(self, msg: Msg) -> None:
        task_id = unescape((msg.headers or {}).get("Conveyor-Task", "="))
        await asyncio.gather(self.client.ack(msg), self.meta.delete(task_id))

    # -- dead letters -------------------------------------------------------------------------

    async def put_dead(self, delivery: Delivery, reason: str, band: int) -> None:
        """Keep a copy of a delivery in `P_dead` with why it failed."""
        headers = {
            "Conveyor-Task": escape(delivery.task_id),
            "Conveyor-Reason": quote(reason),
            "Conveyor-Failed": repr(time.time()),
            "Conveyor-Band": str(band),
        }
        subject = self.client.subject("x", escape(delivery.queue))
        await self.client.publish(subject, delivery.body, headers)

    async def _dead(self, limit: int | None) -> list[tuple[int, DeadLetter, int]]:
        """Dead letters in order with their sequence and band."""
        found: list[tuple[int, DeadLetter, int]] = []
        seq = 1
        every = self.client.subject("x", ">")
        while limit is None or len(found) < limit:
            stored = await self.client.get_seq("dead", seq, every)
            if stored is None:
                return found
            h = stored.headers
            letter = DeadLetter(
                task_id=unescape(h["Conveyor-Task"]),
                queue=unescape(h["Nats-Subject"].split(".")[2]),
                body=stored.data,
                reason=unquote(h.get("Conveyor-Reason", "")),
                failed_at=float(h.get("Conveyor-Failed", 0.0)),
            )
            found.append((stored.seq, letter, int(h.get("Conveyor-Band", 0))))
            seq = stored.seq + 1
        return found

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        return [letter for _, letter, _ in await self._dead(limit)]

    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead letters (all when None) back to their queues, as first deliveries."""
        chosen = None if task_ids is None else set(task_ids)
        moved = 0
        for seq, letter, band in await self._dead(None):
            if chosen is not None and letter.task_id not in chosen:
                continue
            msg_id = f"{escape(letter.task_id)}@q{seq}"
            qtok = escape(letter.queue)
            where = await self._to_tasks(letter.task_id, qtok, band, letter.body, 0, msg_id)
            await self.meta.put(letter.task_id, where, None)
            await self.client.delete("dead", seq)
            moved += 1
        return moved

    # -- cancellation and state ---------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Delete a waiting message (True), or ask the worker running it to stop (False)."""
        await self.client.flushed()
        where = await self._where(task_id)
        if where is not None:
            kind, qtok, band, seq, _ = where
            removable = kind == "d" or (kind == "s" and not await self._delivered(qtok, band, seq))
            stream = "delayed" if kind == "d" else "tasks"
            if removable and await self.client.delete(stream, seq):
                await self.meta.delete(task_id)
                return True
        await self.client.publish(
            self.client.subject("c", escape(task_id)),
            b"1",
            {"Conveyor-Expires": repr(time.time() + CANCEL_SECONDS)},
        )
        return False

    async def _delivered(self, qtok: str, band: int, seq: int) -> bool:
        """Whether the consumer of a band has handed out the message at `seq`."""
        try:
            info = await self.client.api(
                f"CONSUMER.INFO.{self.client.stream('tasks')}.{qtok}-{band}"
            )
        except BrokerError as exc:
            if "not found" in str(exc):
                return False
            raise
        return int(info["delivered"]["stream_seq"]) >= seq

    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Return which of these task ids have a live cancel request (one listing)."""
        if not task_ids:
            return set()
        start = len(self.client.subject("c", ""))
        counts = await self.client.subject_counts("cancels", self.client.subject("c", ">"))
        asked = {unescape(s[start:]) for s in counts} & set(task_ids)
        wanted = set()
        for task_id in asked:
            entry = await self.client.get("cancels", self.client.subject("c", escape(task_id)))
            if entry is not None and not entry.expired:
                wanted.add(task_id)
        now = time.monotonic()
        self.cancels_seen.update((t, now) for t in wanted)  # dropped when they are settled
        return wanted

    async def state(self, task_id: str) -> TransportState | None:
        """Where the message is: queued, running, scheduled, retrying, or None."""
        await self.client.flushed()  # index updates sent without waiting have landed
        where = await self._where(task_id, wait=False)
        if where is None:
            return None
        kind, qtok, band, seq, retrying = where
        if kind == "p":
            return "queued"
        if await self.client.get_seq("tasks" if kind == "s" else "delayed", seq) is None:
            return None
        if kind == "d":
            return "retrying" if retrying else "scheduled"
        return "running" if await self._delivered(qtok, band, seq) else "queued"

    async def _where(
        self, task_id: str, wait: bool = True
    ) -> tuple[str, str, int, int, bool] | None:
        """The task's index entry: (kind, queue token, band, sequence, retrying).

        Kind "p" (being published) has no sequence yet; with `wait`, wait briefly for the
        producer's update to land.
        """
        for _ in range(50 if wait else 1):
            entry = await self.meta.get(task_id)
            if entry is None:
                return None
            kind, qtok, band, number, *rest = entry.decode().split(" ")
            if kind != "p":
                return kind, qtok, int(band), int(number), rest == ["r"]
            if time.time() - float(number) > CLAIM_SECONDS:
                return None
            if wait:
                await asyncio.sleep(0.02)
        return ("p", qtok, int(band), 0, False) if not wait else None
