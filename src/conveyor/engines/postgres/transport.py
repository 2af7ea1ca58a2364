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

import os
import socket
import time
import uuid
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
from conveyor.engines.postgres import enqueue
from conveyor.engines.postgres.db import NOW, PgDb, Record
from conveyor.engines.postgres.results import PostgresResultBackend, upsert

__all__ = ["PostgresTransport"]

_Receipt = tuple[int, str, int]
_HELD = "m.id = r.id AND m.owner = r.owner AND m.deliveries = r.n"
_RECEIPTS = "unnest($1::int8[], $2::text[], $3::int4[]) AS r(id, owner, n)"
_NEXT = "ORDER BY priority DESC, available_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
_CLAIM = f"""
WITH picked AS (
    SELECT id, available_at AS was FROM {{s}}.messages
    WHERE {{where}} available_at <= {NOW} {_NEXT}
)
UPDATE {{s}}.messages m
SET owner = $3, available_at = {NOW} + $4, deliveries = m.deliveries + 1
FROM picked WHERE m.id = picked.id
RETURNING m.id, m.task_id, m.queue, m.body, m.deliveries, m.priority, picked.was
"""
_DUE = f"SELECT min(available_at) - {NOW} FROM {{s}}.messages WHERE {{where}} TRUE"


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
    """

    def __init__(
        self,
        db: PgDb,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        results: PostgresResultBackend | None = None,
    ) -> None:
        self.db = db
        self.safe_url = db.safe_url
        self.lease_seconds = lease_seconds
        self._results = results
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._sql = {name: db.sql(text) for name, text in _STATEMENTS.items()}
        self._insert = enqueue.statement(db.schema, "asyncpg")

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
            await self.db.execute(self._insert, *enqueue.columns(messages))
            self.db.queued.notify()

    def transactional(self, connection: object) -> Publisher:
        """A publisher inserting through the caller's `connection`, inside its transaction."""
        return enqueue.bind(connection, self.db.schema)

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` ready messages, sleeping until one may be ready for up to
        `timeout` seconds. An empty `queues` reads every queue."""
        if max_count <= 0:
            return []
        names = list(dict.fromkeys(queues))
        claim, due = (self._sql["claim"], self._sql["due"]) if names else self._everywhere()
        deadline = time.monotonic() + timeout
        while True:
            seen = self.db.queued.generation
            listening = await self.db.listening()
            await self.db.sweep_now_and_then()
            rows = await self.db.fetch(claim, names, max_count, self._consumer, self.lease_seconds)
            if rows:
                rows.sort(key=lambda row: (-row["priority"], row["was"], row["id"]))
                return [_delivery(row, self._consumer) for row in rows]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            until_due = await self.db.fetchval(due, names)
            pause = left if until_due is None else min(left, max(until_due, 0.001))
            await self.db.queued.wait(seen, self.db.poll_pause(listening, pause))

    def _everywhere(self) -> tuple[str, str]:
        return self._sql["claim_all"], self._sql["due_all"]

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries this consumer still holds."""
        if deliveries:
            await self.db.execute(self._sql["extend"], *_receipts(deliveries), self.lease_seconds)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages this consumer still holds; others' claims are left alone."""
        if deliveries:
            await self.db.execute(self._sql["ack"], *_receipts(deliveries))

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result, announce it and ack, in one statement when `results` is the
        engine's own."""
        if results is not self._results or data is None:
            await super().ack_with_result(delivery, results, data, ttl)
            return
        await self.db.fetchval(
            self._sql["ack_with_result"],
            *_receipt(delivery),
            delivery.task_id,
            data,
            ttl,
            self.db.done_channel,
        )

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` seconds;
        waiting consumers are told."""
        await self.db.fetchval(
            self._sql["release"], *_receipt(delivery), body, max(delay, 0.0), self.db.queued_channel
        )
        self.db.queued.notify()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to `dead_letters` with the reason."""
        await self.db.execute(
            self._sql["dead_letter"], *_receipt(delivery), delivery.task_id, delivery.body, reason
        )

    # -- admin reads and operations -------------------------------------------------------

    async def describe(self) -> str:
        """The schema holding conveyor's tables and its version."""
        return f"schema {self.db.schema} (version {await self.db.version()})"

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is, or None when it is not held."""
        rows = await self.db.fetch(self._sql["locate"], task_id)
        if not rows:
            return None
        if rows[0]["ready"]:
            return "waiting"
        return "leased" if rows[0]["owner"] is not None else "delayed"

    async def remove(self, task_id: str) -> bool:
        """Delete a waiting or delayed message; False when it is leased or not held."""
        return await self.db.execute(self._sql["remove"], task_id) != "DELETE 0"

    async def queue_stats(self) -> list[QueueStats]:
        """Ready, scheduled and running counts of every queue holding messages."""
        rows = await self.db.fetch(self._sql["stats"])
        return [QueueStats(r["queue"], r["ready"], r["scheduled"], r["running"]) for r in rows]

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting (not running) messages of one queue or all; how many."""
        status = await self.db.execute(self._sql["purge"], queue)
        return int(status.split()[-1])

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        rows = await self.db.fetch(self._sql["dead_letters"], limit)
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
            self._sql["drop_dead"], [r[0] for r in refs], [r[1] for r in refs]
        )
        return int(status.split()[-1])


_STATEMENTS = {
    "claim": _CLAIM.replace("{where}", "queue = ANY($1::text[]) AND"),
    "claim_all": _CLAIM.replace("{where}", "cardinality($1::text[]) = 0 AND"),
    "due": _DUE.replace("{where}", "queue = ANY($1::text[]) AND"),
    "due_all": _DUE.replace("{where}", "cardinality($1::text[]) = 0 AND"),
    "extend": f"UPDATE {{s}}.messages m SET available_at = {NOW} + $4 FROM {_RECEIPTS}"
    f" WHERE {_HELD}",
    "ack": f"DELETE FROM {{s}}.messages m USING {_RECEIPTS} WHERE {_HELD}",
    "ack_with_result": f"""
        WITH r AS (SELECT $1::int8 AS id, $2::text AS owner, $3::int4 AS n),
        acked AS (DELETE FROM {{s}}.messages m USING r WHERE {_HELD}),
        stored AS ({upsert("results", "$4", "$5", "$6")})
        SELECT pg_notify($7, $4)""",
    "release": f"""
        WITH r AS (SELECT $1::int8 AS id, $2::text AS owner, $3::int4 AS n),
        back AS (
            UPDATE {{s}}.messages m SET body = coalesce($4, m.body),
                available_at = {NOW} + $5, eta = CASE WHEN $5 > 0 THEN {NOW} + $5 END,
                owner = NULL
            FROM r WHERE {_HELD} RETURNING 1
        )
        SELECT pg_notify($6, '') FROM back""",
    "dead_letter": f"""
        WITH r AS (SELECT $1::int8 AS id, $2::text AS owner, $3::int4 AS n),
        gone AS (DELETE FROM {{s}}.messages m USING r WHERE {_HELD} RETURNING m.queue, m.priority)
        INSERT INTO {{s}}.dead_letters (task_id, queue, priority, body, reason, failed_at)
        SELECT coalesce(nullif($4, ''), '<row ' || $1 || '>'), queue, priority, $5, $6, {NOW}
        FROM gone
        ON CONFLICT (task_id) DO UPDATE SET queue = EXCLUDED.queue,
            priority = EXCLUDED.priority, body = EXCLUDED.body, reason = EXCLUDED.reason,
            failed_at = EXCLUDED.failed_at""",
    "locate": f"SELECT owner, available_at <= {NOW} AS ready FROM {{s}}.messages"
    " WHERE task_id = $1",
    "remove": "DELETE FROM {s}.messages WHERE task_id = $1"
    f" AND (owner IS NULL OR available_at <= {NOW})",
    "stats": f"""
        SELECT queue, count(*) FILTER (WHERE available_at <= now.t) AS ready,
            count(*) FILTER (WHERE available_at > now.t AND owner IS NULL) AS scheduled,
            count(*) FILTER (WHERE available_at > now.t AND owner IS NOT NULL) AS running
        FROM {{s}}.messages, (SELECT {NOW} AS t) now GROUP BY queue ORDER BY queue""",
    "purge": "DELETE FROM {s}.messages WHERE ($1::text IS NULL OR queue = $1)"
    f" AND (owner IS NULL OR available_at <= {NOW})",
    "dead_letters": "SELECT task_id, queue, body, reason, failed_at, priority"
    " FROM {s}.dead_letters ORDER BY failed_at, id LIMIT $1",
    "drop_dead": "DELETE FROM {s}.dead_letters d USING unnest($1::text[], $2::float8[])"
    " AS r(task_id, failed_at) WHERE d.task_id = r.task_id AND d.failed_at = r.failed_at",
}
