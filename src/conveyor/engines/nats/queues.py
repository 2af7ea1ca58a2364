"""Where the NATS engine keeps messages: the task-id index, publishing, delayed messages, counts.

Layout (P = prefix, Q = escaped queue name, B = priority band 0-9, T = escaped task id): a
message waits on `P.q.Q.B` of `P_tasks` (work-queue retention: an acked message is removed),
leased by the durable pull consumer `Q-B` (`ack_wait` = the lease); a delayed one waits on
`P.d.Q` of `P_delayed`. Headers: `Conveyor-Task` (T), `Conveyor-Deliveries` (deliveries of
earlier copies), and on a delayed one `Conveyor-Band` and `Conveyor-Due` (unix time).

Invariants: `P.i.T` in `P_meta` says where a held task id's message is (`s Q B <seq>` in
`P_tasks`, `d Q B <seq>` in `P_delayed`, `p Q B <time>` while being published), so a held id
is never published twice; a publish claims it create-only first, then publishes, then records
the sequence by compare-and-set over its claim (a message settled meanwhile is not recorded
again). `Nats-Msg-Id` is unique per copy, so JetStream's 2-minute dedup window drops a copy sent
twice (a sweeper that died between publishing and acking). A delayed message is held by the
`sweep` consumer with a negative ack delayed until it is due (the server keeps the timers), and
whichever worker fetches it then moves it to its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from conveyor.engines.base import Outgoing
from conveyor.engines.nats.client import Msg, NatsClient
from conveyor.engines.nats.keys import Keys, escape, task_of, unescape
from conveyor.errors import BrokerError

__all__ = ["CLAIM_SECONDS", "Place", "Queues"]

log = logging.getLogger("conveyor.nats")

_SWEEP_BATCH = 256
_BANDS = frozenset(str(band) for band in range(10))
#: Seconds a "being published" index entry guards its task id (its producer may have died).
CLAIM_SECONDS = 10.0
_EXPECT = "Nats-Expected-Last-Subject-Sequence"

#: An index entry: (kind "s", "d" or "p", queue token, band, sequence; for "p" the claim time).
Place = tuple[str, str, int, int]


class Queues:
    """The app's queues on `P_tasks` and `P_delayed`, and the index of their task ids.

    Args:
        client: the app's client.
        lease_seconds: the `ack_wait` of the queues' consumers.
    """

    def __init__(self, client: NatsClient, lease_seconds: float) -> None:
        self.client, self.lease_seconds = client, lease_seconds
        self.index = Keys(client, "meta", "i")

    async def consumer(self, qtok: str, band: int) -> str:
        """The name of a band's consumer, created on first use."""
        config = {
            "filter_subject": self.client.subject("q", qtok, str(band)),
            "ack_policy": "explicit",
            "ack_wait": int(self.lease_seconds * 1e9),
            "max_ack_pending": -1,
            "max_deliver": -1,
            "deliver_policy": "all",
        }
        await self.client.ensure_consumer("tasks", f"{qtok}-{band}", config)
        return f"{qtok}-{band}"

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, m: Outgoing) -> None:
        """Publish one message unless its task id is held."""
        band, qtok = min(max(int(m.priority), 0), 9), escape(m.queue)
        revision = await self._claim(m.task_id, f"p {qtok} {band} {time.time()!r}".encode())
        if revision is None:
            return
        msg_id = f"{escape(m.task_id)}@{revision}"
        if m.eta is not None and m.eta > time.time():
            where = await self.to_delayed(m.task_id, qtok, band, m.body, m.eta, 0, msg_id)
        else:
            where = await self.to_tasks(m.task_id, qtok, band, m.body, 0, msg_id)
        # Sent without waiting: until it lands the entry reads "being published" (waiting).
        await self.client.send(self.index.subject(m.task_id), where, {_EXPECT: str(revision)})

    async def _claim(self, task_id: str, claim: bytes) -> int | None:
        """Record that `task_id` is being published; None when a live message holds it."""
        while True:
            revision = await self.index.put_if(task_id, claim, None, 0)
            if revision is not None:
                return revision
            entry = await self.index.read(task_id)
            if entry is None:
                continue
            if await self._holds(_place(entry.data)):
                return None
            revision = await self.index.put_if(task_id, claim, None, entry.seq)
            if revision is not None:
                return revision

    async def _holds(self, place: Place) -> bool:
        kind, _, _, seq = place
        if kind == "p":
            return time.time() - seq < CLAIM_SECONDS
        return await self.client.get_seq("tasks" if kind == "s" else "delayed", seq) is not None

    async def to_tasks(
        self, task_id: str, qtok: str, band: int, body: bytes, earlier: int, msg_id: str
    ) -> bytes:
        """Publish to a queue's band, wake its idle workers; the index entry to record."""
        headers = {"Nats-Msg-Id": msg_id, "Conveyor-Task": escape(task_id)}
        if earlier:
            headers["Conveyor-Deliveries"] = str(earlier)
        seq = await self.client.publish(self.client.subject("q", qtok, str(band)), body, headers)
        await self.client.send(self.client.subject("n", qtok), b"")
        return f"s {qtok} {band} {seq}".encode()

    async def to_delayed(
        self, task_id: str, qtok: str, band: int, body: bytes, due: float, earlier: int, msg_id: str
    ) -> bytes:
        """Publish to `P_delayed`, due at unix time `due`; the index entry to record."""
        headers = {
            "Nats-Msg-Id": msg_id,
            "Conveyor-Task": escape(task_id),
            "Conveyor-Band": str(band),
            "Conveyor-Due": repr(due),
            "Conveyor-Deliveries": str(earlier),
        }
        seq = await self.client.publish(self.client.subject("d", qtok), body, headers)
        return f"d {qtok} {band} {seq}".encode()

    # -- delayed messages ---------------------------------------------------------------------

    async def sweep(self) -> float:
        """Move due delayed messages to their queues, hold the others until they are due;
        the seconds until the first of those is due (inf when none)."""
        config = {
            "filter_subject": self.client.subject("d", ">"),
            "ack_policy": "explicit",
            "ack_wait": 30 * 10**9,
            "max_ack_pending": -1,
            "max_deliver": -1,
        }
        await self.client.ensure_consumer("delayed", "sweep", config)
        soonest = float("inf")
        while True:
            msgs = await self.client.pull("delayed", "sweep", _SWEEP_BATCH)
            for left in await asyncio.gather(*(self._sweep_one(msg) for msg in msgs)):
                soonest = min(soonest, left)
            if len(msgs) < _SWEEP_BATCH:
                return soonest

    async def _sweep_one(self, msg: Msg) -> float:
        due = _due(msg.headers)
        if due is None:  # not ours: drop it rather than stall every sweep
            log.warning("dropping a malformed delayed message on %s", msg.subject)
            await self.client.ack(msg, b"+TERM")
            return float("inf")
        task_id, band, earlier, left = due
        if left > 0.001:
            await self.client.ack(msg, b"-NAK " + json.dumps({"delay": int(left * 1e9)}).encode())
            return left
        qtok = msg.subject.split(".")[2]
        msg_id = f"{escape(task_id)}@s{msg.metadata.sequence.stream}"
        where = await self.to_tasks(task_id, qtok, band, msg.data, earlier, msg_id)
        await self.index.put(task_id, where)
        await self.client.ack(msg)
        return float("inf")

    # -- where a task is ----------------------------------------------------------------------

    async def where(self, task_id: str, wait: bool = True) -> Place | None:
        """The task's index entry; with `wait`, one being published is waited for (1 s)."""
        for attempt in range(50 if wait else 1):
            if attempt:
                await asyncio.sleep(0.02)
            entry = await self.index.get(task_id)
            place = None if entry is None else _place(entry)
            if place is None or place[0] != "p":
                return place
            if time.time() - place[3] > CLAIM_SECONDS:  # its producer died
                return None
        return None if wait else place

    async def delivered(self, qtok: str, band: int, seq: int) -> bool:
        """Whether a band's consumer has handed out the message at `seq`."""
        try:
            info = await self.client.api(
                f"CONSUMER.INFO.{self.client.stream('tasks')}.{qtok}-{band}"
            )
        except BrokerError as exc:
            if "not found" in str(exc):
                return False
            raise
        return int(info["delivered"]["stream_seq"]) >= seq

    # -- purge --------------------------------------------------------------------------------

    async def purge(self, qtok: str | None) -> int:
        """Delete the waiting and delayed messages of one queue (all when None); how many.

        Waiting messages are leased through the bands' consumers and acked (one handed out
        before is running: it is left leased, to come back after its lease); delayed ones are
        read once for their task ids, then purged by subject.
        """
        bands, delayed = await asyncio.gather(self.bands(), self.delayed())
        removed = 0
        for _, q, band in bands:
            if qtok in (None, q):
                removed += await self._drain(q, band)
        for q in delayed:
            if qtok in (None, q):
                removed += await self._purge_delayed(q)
        return removed

    async def _drain(self, qtok: str, band: int) -> int:
        name, removed = await self.consumer(qtok, band), 0
        while True:
            msgs = await self.client.pull("tasks", name, _SWEEP_BATCH)
            fresh = [m for m in msgs if int(m.metadata.num_delivered) == 1]
            await asyncio.gather(*(self._forget(m) for m in fresh))
            removed += len(fresh)
            if len(msgs) < _SWEEP_BATCH:
                return removed

    async def _forget(self, msg: Msg) -> None:
        await self.client.ack(msg)
        if (task_id := task_of(msg.headers)) is not None:
            await self.index.delete(task_id)

    async def _purge_delayed(self, qtok: str) -> int:
        subject, task_ids, seq = self.client.subject("d", qtok), [], 1
        while (stored := await self.client.get_seq("delayed", seq, subject)) is not None:
            task_ids.append(task_of(stored.headers))
            seq = stored.seq + 1
        removed = await self.client.purge("delayed", subject)
        await asyncio.gather(*(self.index.delete(t, wait=False) for t in task_ids if t))
        return removed

    # -- counts -------------------------------------------------------------------------------

    async def bands(self) -> dict[tuple[str, str, int], int]:
        """Messages (waiting and running) per (queue, queue token, band) holding any.

        A subject another writer made that names no queue's band is left out: nothing reads it.
        """
        counts = await self.client.subject_counts("tasks", self.client.subject("q", ">"))
        found = {}
        for subject, n in counts.items():
            tokens = subject.split(".")
            with contextlib.suppress(ValueError):
                if len(tokens) == 4 and tokens[3] in _BANDS:
                    found[(unescape(tokens[2]), tokens[2], int(tokens[3]))] = n
        return found

    async def delayed(self) -> dict[str, int]:
        """Delayed messages per queue token."""
        counts = await self.client.subject_counts("delayed", self.client.subject("d", ">"))
        return {subject.split(".")[2]: n for subject, n in counts.items()}

    async def running(self) -> dict[tuple[str, int], int]:
        """Leased, unacked messages per (queue token, band), from the consumers' state."""
        running: dict[tuple[str, int], int] = {}
        while True:
            page = await self.client.api(
                f"CONSUMER.LIST.{self.client.stream('tasks')}", {"offset": len(running)}
            )
            consumers: list[dict[str, Any]] = page.get("consumers") or []
            for info in consumers:
                qtok, _, band = info["name"].rpartition("-")
                running[(qtok, int(band))] = int(info.get("num_ack_pending", 0))
            if not consumers or len(running) >= int(page.get("total", 0)):
                return running


def _place(entry: bytes) -> Place:
    kind, qtok, band, number = entry.decode().split(" ")[:4]
    return kind, qtok, int(band), int(float(number))


def _due(headers: dict[str, str] | None) -> tuple[str, int, int, float] | None:
    """(task id, band, earlier deliveries, seconds until due) of a delayed message, or None."""
    h, task_id = headers or {}, task_of(headers)
    try:
        band, earlier = int(h["Conveyor-Band"]), int(h.get("Conveyor-Deliveries", 0))
        left = float(h["Conveyor-Due"]) - time.time()
    except (KeyError, ValueError):
        return None
    return (
        None
        if task_id is None or h["Conveyor-Band"] not in _BANDS
        else (task_id, band, earlier, left)
    )
