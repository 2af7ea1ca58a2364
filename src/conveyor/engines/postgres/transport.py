"""The PostgreSQL transport: `messages` and `dead_letters` in the engine's schema (see
`sql/001_init.sql`).

A claim is one statement: `FOR UPDATE SKIP LOCKED` picks the next ready rows, so consumers
never wait for each other and never lease the same row, and the same statement sets their
owner and lease end. A receipt is (row id, owner, delivery count), so a delivery settles or
extends only the claim it came from, never a later claim of the same message. Idle consumers
sleep until a notification (an insert trigger, a release) or until the next row is due (an
ETA, a retry, a lease running out), whichever is first.

Every time is the server's clock (`NOW`): consumers on hosts whose clocks disagree still agree
on leases.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from conveyor.engines.base import (
    DEFAULT_LEASE_SECONDS,
    DeadLetter,
    Delivery,
    Location,
    MessageTransport,
    Outgoing,
    Publisher,
    QueueStats,
    ResultBackend,
)
from conveyor.engines.kit import check_lease, consumer_id
from conveyor.engines.loops import Batcher, batcher_here
from conveyor.engines.postgres import enqueue
from conveyor.engines.postgres.db import PgDb, Record
from conveyor.engines.postgres.results import PostgresResultBackend

__all__ = ["PostgresTransport"]

_Receipt = tuple[int, str, int]


def _receipts(deliveries: Sequence[Delivery]) -> tuple[list[int], list[str], list[int]]:
    held = [_receipt(d) for d in deliveries]
    return [h[0] for h in held], [h[1] for h in held], [h[2] for h in held]


def _receipt(delivery: Delivery) -> _Receipt:
    receipt = delivery.receipt
    if isinstance(receipt, tuple) and len(receipt) == 3:
        return receipt
    return -1, "", -1  # not one of ours: matches no row


def _delivery(row: Record, owner: str) -> Delivery:
    problem = None if row["task_id"] else "it has no task id"
    receipt = (row["id"], owner, row["deliveries"])
    return Delivery(row["task_id"], row["queue"], row["body"], row["deliveries"], receipt, problem)


class PostgresTransport(MessageTransport):
    """Messages in PostgreSQL tables, for any number of producers and consumers.

    Args:
        db: the database, shared with the engine's state store and result store.
        lease_seconds: how long a delivery stays leased without `extend`.
        results: the engine's result store: a result for it is stored in the ack's statement.

    Raises:
        ConfigurationError: `lease_seconds` is not positive.
    """

    def __init__(
        self,
        db: PgDb,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        results: PostgresResultBackend | None = None,
    ) -> None:
        check_lease(lease_seconds)
        self.db = db
        self.safe_url = db.safe_url
        self.lease_seconds = lease_seconds
        self._results = results
        self._consumer = consumer_id()
        self._q = db.q
        self._settles: Batcher[tuple[Any, ...]] | None = None

    async def startup(self) -> None:
        """Connect and create or migrate the schema; `BrokerConnectionError` when unreachable."""
        await self.db.version()

    async def shutdown(self) -> None:
        """Close this process's connections."""
        await self.db.close()

    # -- messages -------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Insert messages in one statement; ids already held are ignored."""
        if messages:
            await self.db.execute(self._q["insert"], *enqueue.columns(messages))
            self.db.queued.notify()

    def transactional(self, connection: object) -> Publisher:
        """A publisher inserting through the caller's `connection`, inside its transaction."""
        return enqueue.bind(connection, self._q["insert"])

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` ready messages, sleeping until one may be ready for up to
        `timeout` seconds. An empty `queues` reads every queue."""
        if max_count <= 0:
            return []
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + timeout
        while True:
            seen = self.db.queued.generation
            listening = await self.db.listening()
            await self.db.sweep_now_and_then()
            if not queues:  # every queue: those that hold messages now
                names = [row["queue"] for row in await self.db.fetch(self._q["queues"])]
            rows = await self.db.fetch(
                self._q["claim"], names, max_count, self._consumer, self.lease_seconds
            )
            if rows:
                rows.sort(key=lambda row: (-row["priority"], row["was"], row["id"]))
                return [_delivery(row, self._consumer) for row in rows]
            self.db.vacuum_soon(0, idle=True)
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            until_due = await self.db.fetchval(self._q["due"], names)
            pause = left if until_due is None else min(left, max(until_due, 0.001))
            await self.db.queued.wait(seen, self.db.poll_pause(listening, pause))

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries this consumer still holds."""
        if deliveries:
            await self.db.execute(self._q["extend"], *_receipts(deliveries), self.lease_seconds)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages this consumer still holds; others' claims are left alone."""
        if deliveries:
            await self.db.execute(self._q["ack"], *_receipts(deliveries))
            self.db.vacuum_soon(len(deliveries))

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result, announce it and ack, in one statement when `results` is the
        engine's own: with those of the other deliveries settled meanwhile, in one commit (each
        commit that notifies holds the database's notification lock through its WAL flush, so
        one commit per task caps a worker at one flush per task)."""
        if results is not self._results or data is None:
            await super().ack_with_result(delivery, results, data, ttl)
            return
        self._settles = batcher_here(self._settles, self._acks_with_results)
        await self._settles.submit((*_receipt(delivery), delivery.task_id, data, ttl))

    async def _acks_with_results(self, items: list[tuple[Any, ...]]) -> None:
        columns = [list(column) for column in zip(*items, strict=True)]
        await self.db.execute(self._q["ack_with_result"], *columns, self.db.done_channel)
        self.db.vacuum_soon(len(items))

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` seconds;
        waiting consumers are told."""
        await self.db.fetchval(
            self._q["release"], *_receipt(delivery), body, max(delay, 0.0), self.db.queued_channel
        )
        self.db.queued.notify()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to `dead_letters` with the reason."""
        await self.db.execute(
            self._q["dead_letter"], *_receipt(delivery), delivery.task_id, delivery.body, reason
        )

    # -- admin reads and operations -------------------------------------------------------

    async def describe(self) -> str:
        """The schema holding conveyor's tables and its version."""
        return f"schema {self.db.schema} (version {await self.db.version()})"

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is, or None when it is not held."""
        rows = await self.db.fetch(self._q["locate"], task_id)
        if not rows:
            return None
        if rows[0]["ready"]:
            return "waiting"
        return "leased" if rows[0]["owner"] is not None else "delayed"

    async def remove(self, task_id: str) -> bool:
        """Delete a waiting or delayed message; False when it is leased or not held."""
        return await self.db.execute(self._q["remove"], task_id) != "DELETE 0"

    async def queue_stats(self) -> list[QueueStats]:
        """Ready, scheduled and running counts of every queue holding messages."""
        rows = await self.db.fetch(self._q["stats"])
        return [QueueStats(r["queue"], r["ready"], r["scheduled"], r["running"]) for r in rows]

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting (not running) messages of one queue or all; how many."""
        status = await self.db.execute(self._q["purge"], queue)
        return int(status.split()[-1])

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        rows = await self.db.fetch(self._q["dead_letters"], limit)
        return [
            DeadLetter(
                r["task_id"],
                r["queue"],
                r["body"],
                r["reason"],
                r["failed_at"],
                r["priority"],
                (r["task_id"], r["failed_at"]),
            )
            for r in rows
        ]

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters; one the same id got since (a later failure) stays."""
        refs: list[Any] = [d.ref for d in letters if isinstance(d.ref, tuple)]
        if not refs:
            return 0
        status = await self.db.execute(
            self._q["drop_dead"], [r[0] for r in refs], [r[1] for r in refs]
        )
        return int(status.split()[-1])
