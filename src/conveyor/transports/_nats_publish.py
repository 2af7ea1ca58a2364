"""The publishing side of the NATS transport: sending, the task-id index, and delayed messages.

A publish first claims its task id in `P_meta` (`P.i.<id>` created only if absent: a held id is
not published twice), then publishes to `P.q.<queue>.<band>` (or to `P_delayed`), then records
there where the message is. Delayed messages are swept into their queues by whichever worker
fetches them once due: `P_delayed`'s consumer holds each one with a negative ack delayed until
its due time, so the server keeps the timers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from conveyor.transports._nats_client import NatsClient
from conveyor.transports._nats_conn import Msg, escape, unescape
from conveyor.transports._nats_state import NatsState
from conveyor.transports.base import Outgoing, Transport

__all__ = ["CLAIM_SECONDS", "NatsPublishing"]

log = logging.getLogger("conveyor.nats")

_SWEEP_BATCH = 256
#: Seconds a "being published" index entry protects its task id (a producer that died mid-way).
CLAIM_SECONDS = 10.0
_EXPECT = "Nats-Expected-Last-Subject-Sequence"


class NatsPublishing(Transport):
    """`publish`, the consumers' names and the sweep of due delayed messages."""

    client: NatsClient
    meta: NatsState
    _poll: float
    _next_sweep: float

    def _consumer_config(self, queue_token: str, band: int) -> dict[str, Any]:
        return {
            "filter_subject": self.client.subject("q", queue_token, str(band)),
            "ack_policy": "explicit",
            "ack_wait": int(self.lease_seconds * 1e9),
            "max_ack_pending": -1,
            "max_deliver": -1,
            "deliver_policy": "all",
        }

    async def _consumer(self, queue_token: str, band: int) -> str:
        name = f"{queue_token}-{band}"
        await self.client.ensure_consumer("tasks", name, self._consumer_config(queue_token, band))
        return name

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish every message concurrently; a task id already held is skipped."""
        await asyncio.gather(*(self._publish_one(m) for m in messages))

    async def _publish_one(self, m: Outgoing) -> None:
        band = min(max(int(m.priority), 0), 9)
        qtok = escape(m.queue)
        claim = f"p {qtok} {band} {time.time()!r}".encode()
        revision = await self._claim(m.task_id, claim)
        if revision is None:
            return
        msg_id = f"{escape(m.task_id)}@{revision}"
        if m.eta is not None and m.eta > time.time():
            where = await self._to_delayed(m.task_id, qtok, band, m.body, m.eta, "d", 0, msg_id)
        else:
            where = await self._to_tasks(m.task_id, qtok, band, m.body, 0, msg_id)
        # Sent without waiting: until it lands the entry reads "being published" (queued), and
        # it is dropped if the message was settled meanwhile (its revision moved on).
        await self.client.send(self.meta.subject(m.task_id), where, {_EXPECT: str(revision)})

    async def _claim(self, task_id: str, claim: bytes) -> int | None:
        """Record that `task_id` is being published; None when a live message holds it."""
        while True:
            revision = await self.meta.put_if(task_id, claim, None, 0)
            if revision is not None:
                return revision
            entry = await self.meta.read(task_id)
            if entry is None:
                continue
            if await self._holds(entry.data):
                return None
            revision = await self.meta.put_if(task_id, claim, None, entry.seq)
            if revision is not None:
                return revision

    async def _holds(self, where: bytes) -> bool:
        kind, _, band_seq = where.decode().partition(" ")
        fields = band_seq.split(" ")
        if kind == "p":
            return time.time() - float(fields[2]) < CLAIM_SECONDS
        stream = "tasks" if kind == "s" else "delayed"
        return await self.client.get_seq(stream, int(fields[2])) is not None

    async def _to_tasks(
        self, task_id: str, qtok: str, band: int, body: bytes, earlier: int, msg_id: str
    ) -> bytes:
        headers = {"Nats-Msg-Id": msg_id, "Conveyor-Task": escape(task_id)}
        if earlier:
            headers["Conveyor-Deliveries"] = str(earlier)
        answer = await self.client.publish(self.client.subject("q", qtok, str(band)), body, headers)
        await self.client.send(self.client.subject("n", qtok), b"")  # wakes waiting workers
        return f"s {qtok} {band} {answer['seq']}".encode()

    async def _to_delayed(
        self,
        task_id: str,
        qtok: str,
        band: int,
        body: bytes,
        due: float,
        kind: str,
        earlier: int,
        msg_id: str,
    ) -> bytes:
        headers = {
            "Nats-Msg-Id": msg_id,
            "Conveyor-Task": escape(task_id),
            "Conveyor-Band": str(band),
            "Conveyor-Due": repr(due),
            "Conveyor-Kind": kind,
            "Conveyor-Deliveries": str(earlier),
        }
        answer = await self.client.publish(self.client.subject("d", qtok), body, headers)
        return f"d {qtok} {band} {answer['seq']} {kind}".encode()

    async def _sweep(self) -> None:
        """Move due delayed messages to their queues; hold the others until they are due."""
        self._next_sweep = time.monotonic() + self._poll
        config = {
            "filter_subject": self.client.subject("d", ">"),
            "ack_policy": "explicit",
            "ack_wait": 30 * 10**9,
            "max_ack_pending": -1,
            "max_deliver": -1,
        }
        await self.client.ensure_consumer("delayed", "sweep", config)
        while True:
            msgs = await self.client.pull("delayed", "sweep", _SWEEP_BATCH)
            await asyncio.gather(*(self._sweep_one(msg) for msg in msgs))
            if len(msgs) < _SWEEP_BATCH:
                return

    async def _sweep_one(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            left = float(headers["Conveyor-Due"]) - time.time()
            int(headers["Conveyor-Band"])
        except (KeyError, ValueError):  # not ours: drop it rather than stall every sweep
            log.warning("dropping a malformed delayed message on %s", msg.subject)
            await self.client.ack(msg, b"+TERM")
            return
        if left > 0.001:
            self._next_sweep = min(self._next_sweep, time.monotonic() + left)
            delay = json.dumps({"delay": int(left * 1e9)})
            await self.client.ack(msg, b"-NAK " + delay.encode())
            return
        task_id = unescape(headers["Conveyor-Task"])
        qtok = msg.subject.split(".")[2]
        msg_id = f"{headers['Conveyor-Task']}@s{msg.metadata.sequence.stream}"
        earlier = int(headers.get("Conveyor-Deliveries", 0))
        band = int(headers["Conveyor-Band"])
        where = await self._to_tasks(task_id, qtok, band, msg.data, earlier, msg_id)
        await self.meta.put(task_id, where, None)
        await self.client.ack(msg)
