"""Where the NATS engine keeps messages: one subject per task id, publishing, delayed messages,
the bands' consumers, counts.

Layout (P = prefix, Q = escaped queue name, B = priority band 0-9, T = escaped task id): a
message waits on `P.w.Q.B.T` of `P_work` (work-queue retention: an acked message is removed),
leased by the durable pull consumer `Q-B` (filter `P.w.Q.B.*`, `ack_wait` = the lease); a
delayed one waits on `P.a.Q.B.T` of `P_later` with its unix due time in `Conveyor-Due`. The
header `Conveyor-Deliveries` counts the deliveries of earlier copies.

Invariants: both streams keep one message per subject, and a publish carries
`Nats-Expected-Last-Subject-Sequence: 0`, so a task id held on a band (waiting or leased) or
among its queue's delayed messages is not published there again, in the publish itself. A
release without delay replaces its own message (the subject's one). A band's consumer exists
before its first message (the publisher makes it, then nudges `P.n.Q` once so idle workers
list the consumers again). A delayed message is held by the `sweep` consumer with a negative
ack delayed until it is due (the server keeps the timers); whichever worker fetches it then
moves it to its band with a `Nats-Msg-Id` unique to that copy (JetStream's 2-minute dedup
window drops a second move by a sweeper that died before acking).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from conveyor.engines.base import Outgoing
from conveyor.engines.nats.client import EXPECT, Msg, NatsClient, WrongSequence
from conveyor.engines.nats.conn import log
from conveyor.engines.nats.keys import escape
from conveyor.errors import BrokerError

__all__ = ["Queues", "band_of"]

_SWEEP_BATCH = 256
_BANDS = frozenset(str(band) for band in range(10))
_ROOT = {"work": "w", "later": "a"}
#: What the bands' consumers and `sweep` share: explicit acks, any number of messages leased
#: at once, redelivered without limit.
_PULL = {"ack_policy": "explicit", "max_ack_pending": -1, "max_deliver": -1}


class Queues:
    """The app's queues on `P_work` and `P_later`.

    Args:
        client: the app's client.
        lease_seconds: the `ack_wait` of the bands' consumers.
    """

    def __init__(self, client: NatsClient, lease_seconds: float) -> None:
        self.client, self.lease_seconds = client, lease_seconds
        self.made: set[tuple[str, int]] = set()  # bands whose consumer this process saw

    async def consumer(self, qtok: str, band: int) -> None:
        """Make a band's consumer `Q-B` on first use."""
        config = {"filter_subject": self.client.subject("w", qtok, str(band), "*"), **_PULL}
        config |= {"ack_wait": int(self.lease_seconds * 1e9), "deliver_policy": "all"}
        await self.client.ensure_consumer("work", f"{qtok}-{band}", config)
        self.made.add((qtok, band))

    async def consumers(self) -> dict[str, dict[str, Any]]:
        """Every band consumer's info by name (`CONSUMER.LIST`, paged)."""
        return await self.client.paged(f"CONSUMER.LIST.{self.client.stream('work')}", "consumers")

    # -- publishing ---------------------------------------------------------------------------

    async def prepare(self, messages: Sequence[Outgoing]) -> None:
        """Make the consumers of the bands of `messages` this process has not seen (see
        `put`), then nudge idle workers once per queue to list the consumers again."""
        new = {(escape(m.queue), m.band) for m in messages if m.eta is None} - self.made
        if not new:  # every `kiq` after a band's first
            return
        await asyncio.gather(*(self._make(qtok, band) for qtok, band in new))
        for qtok in {qtok for qtok, _ in new}:
            await self.client.send(self.client.subject("n", qtok), b"")

    async def _make(self, qtok: str, band: int) -> None:
        if not await self.delivered(qtok, band, -1):  # the workers' lease stays
            await self.consumer(qtok, band)
        self.made.add((qtok, band))

    async def publish(self, m: Outgoing) -> None:
        """Publish one message unless its task id is held on its band (or delayed)."""
        delayed = m.eta is not None and m.eta > time.time()
        headers = {EXPECT: "0", "Conveyor-Due": repr(m.eta)} if delayed else {EXPECT: "0"}
        kind = "later" if delayed else "work"
        await self.put(kind, escape(m.queue), m.band, escape(m.task_id), m.body, headers)

    async def put(
        self, kind: str, qtok: str, band: int, ttok: str, body: bytes, headers: dict[str, str]
    ) -> bool:
        """Publish to a band (or to `P_later`); False when an expected sequence did not match.

        Before this process's first publish to a band, its consumer is made if missing (the
        workers' lease stays; nats-server 2.9 miscounts a message deleted by sequence that
        was stored before its consumer was made), and idle workers are nudged to list the
        consumers again.
        """
        if kind == "work" and (qtok, band) not in self.made:
            await self._make(qtok, band)
            await self.client.send(self.client.subject("n", qtok), b"")
        try:
            subject = self.client.subject(_ROOT[kind], qtok, str(band), ttok)
            await self.client.publish(subject, body, headers)
        except WrongSequence:
            return False
        return True

    # -- delayed messages ---------------------------------------------------------------------

    async def sweep(self) -> float:
        """Move due delayed messages to their queues, hold the others until they are due;
        the seconds until the first of those is due (inf when none)."""
        config = {"filter_subject": self.client.subject("a", ">"), **_PULL, "ack_wait": 30 * 10**9}
        await self.client.ensure_consumer("later", "sweep", config)
        soonest = float("inf")
        while True:
            msgs = await self.client.pull("later", "sweep", _SWEEP_BATCH)
            soonest = min([soonest, *await asyncio.gather(*map(self._sweep_one, msgs))])
            if len(msgs) < _SWEEP_BATCH:
                return soonest

    async def _sweep_one(self, msg: Msg) -> float:
        headers = msg.headers or {}
        try:
            _, _, qtok, band, ttok = msg.subject.split(".")
            left = float(headers["Conveyor-Due"]) - time.time()
            earlier = int(headers.get("Conveyor-Deliveries", 0))
            if band not in _BANDS:
                raise ValueError(band)
        except (KeyError, ValueError):  # not ours: drop it rather than stall every sweep
            log.warning("dropping a malformed delayed message on %s", msg.subject)
            await self.client.ack(msg, b"+TERM")
            return float("inf")
        if left > 0.001:
            await self.client.ack(msg, b"-NAK " + json.dumps({"delay": int(left * 1e9)}).encode())
            return left
        moved = {EXPECT: "0", "Nats-Msg-Id": f"{ttok}@a{msg.metadata.sequence.stream}"}
        moved |= {"Conveyor-Deliveries": str(earlier)} if earlier else {}
        replaces = headers.get("Conveyor-Replaces")
        # A retry whose first copy's ack has not landed yet takes its place.
        if not await self.put("work", qtok, int(band), ttok, msg.data, moved) and replaces:
            await self.put("work", qtok, int(band), ttok, msg.data, moved | {EXPECT: replaces})
        await self.client.ack(msg)  # else the id is held: this copy is dropped
        return float("inf")

    # -- where a task is ----------------------------------------------------------------------

    async def find(self, kind: str, task_id: str) -> tuple[str, int, int] | None:
        """(queue token, band, sequence) of the task's message in `P_work` or `P_later`."""
        every = self.client.subject(_ROOT[kind], "*", "*", escape(task_id))
        for subject in await self.client.subject_counts(kind, every):
            if (stored := await self.client.get(kind, subject)) is not None:
                _, _, qtok, band, _ = subject.split(".")
                return qtok, int(band), stored.seq
        return None

    async def delivered(self, qtok: str, band: int, seq: int) -> bool:
        """Whether a band's consumer has handed out the message at `seq` (with -1: whether
        the consumer exists)."""
        name = f"{self.client.stream('work')}.{qtok}-{band}"
        try:
            info = await self.client.api(f"CONSUMER.INFO.{name}")
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
        purged by subject.
        """
        removed = 0
        for name in await self.consumers():
            if (band := band_of(name)) and qtok in (None, band[0]):
                removed += await self._drain(name)
        later = self.client.subject("a", qtok or "*", ">")
        return removed + await self.client.purge("later", later)

    async def _drain(self, name: str) -> int:
        removed = 0
        while True:
            msgs = await self.client.pull("work", name, _SWEEP_BATCH)
            fresh = [m for m in msgs if int(m.metadata.num_delivered) == 1]
            await asyncio.gather(*(self.client.ack(m) for m in fresh))
            removed += len(fresh)
            if len(msgs) < _SWEEP_BATCH:
                return removed


def band_of(name: str) -> tuple[str, int] | None:
    """(queue token, band) of a band consumer's name, or None for another consumer."""
    qtok, _, band = name.rpartition("-")
    return (qtok, int(band)) if qtok and band in _BANDS else None
