"""The embedded transport: one SQLite file, many producer and worker processes, no server.

Layout (all in the one file, see `db`): `messages` holds every message until it is acked, with
`available_at` the time it may next be handed out (its ETA, its retry time, or the end of its
lease) and `owner` the consumer that leased it; `dead_letters` holds what was given up on. A
claim is one short `BEGIN IMMEDIATE` transaction, so two consumers never lease the same
delivery. A delivery's receipt is (rowid, owner, deliveries), so it settles or extends only the
claim it came from, never a later claim of the same message after its lease ran out. A receive
cancelled while its claim runs loses nothing: those messages return when the lease ends.

A row written by someone else with the wrong types (a TEXT body, no task id) is handed out as a
delivery with its `problem`, so it is dead-lettered and the rest of its batch runs.

Publishing a `task_id` that is already in `messages` is ignored: the first copy stays.

Idle consumers poll with a growing pause (up to `poll_interval`), and a commit of a ready
message rings the file's `doorbell`, which wakes the consumers of other processes at once.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, cast

from conveyor.engines.base import (
    DEFAULT_LEASE_SECONDS,
    DeadLetter,
    Delivery,
    Location,
    MessageTransport,
    Outgoing,
    QueueStats,
    ResultBackend,
)
from conveyor.engines.kit import consumer_id
from conveyor.engines.loops import Batcher, Signal, batcher_here
from conveyor.engines.sqlite.db import SqliteClient, SqliteDb, immediate, marks, put_value, rowcount
from conveyor.engines.sqlite.doorbell import doorbell
from conveyor.engines.sqlite.results import SqliteResultBackend

__all__ = ["SqliteTransport"]

_Row = tuple[Any, ...]
#: A delivery's receipt: the row, the consumer that leased it, and that lease's delivery count.
_Receipt = tuple[int, str, int]

_INSERT = (
    "INSERT OR IGNORE INTO messages (task_id, queue, priority, body, available_at, eta, owner,"
    " deliveries, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, NULL, 0, ?)"
)
_OWNED = "rowid = ? AND owner = ? AND deliveries = ?"
#: A DELETE of the messages not running (waiting or delayed) at time ?1: a condition follows.
_DELETE_WAITING = "DELETE FROM messages WHERE (owner IS NULL OR available_at <= ?1) AND "


def _owned(delivery: Delivery) -> _Receipt:
    receipt = delivery.receipt
    if isinstance(receipt, tuple) and len(receipt) == 3:
        return receipt
    return -1, "", -1  # not one of ours: matches no row


def _delivery(row: _Row, owner: str) -> Delivery:
    """A claimed row as a delivery; one with the wrong types comes with its problem."""
    rowid, task_id, queue, body, n = row
    problem = None
    if not isinstance(body, bytes):
        problem = f"its body is {type(body).__name__}, not bytes"
        body = b"" if body is None else str(body).encode(errors="replace")
    if not isinstance(task_id, str):
        problem = "it has no task id"
        task_id = ""
    return Delivery(task_id, str(queue), body, int(n), (rowid, owner, n), problem)


# -- statements, run on the database thread -------------------------------------------------


def _publish(conn: sqlite3.Connection, messages: Sequence[Outgoing]) -> None:
    now = time.time()
    rows = [
        (m.task_id, m.queue, m.priority, m.body, now if m.eta is None else m.eta, m.eta, now)
        for m in messages
    ]
    with immediate(conn):
        conn.executemany(_INSERT, rows)


def _claim(
    conn: sqlite3.Connection, queues: Sequence[str], limit: int, owner: str, lease: float
) -> list[_Row]:
    in_queues = f"queue IN ({marks(len(queues))}) AND " if queues else ""  # none: every queue
    ready = f"SELECT rowid FROM messages WHERE {in_queues}available_at <= ?"
    # A plain read first: idle pollers never take the write lock.
    if conn.execute(f"{ready} LIMIT 1", (*queues, time.time())).fetchone() is None:
        return []
    with immediate(conn):
        now = time.time()
        picked = conn.execute(
            f"{ready} ORDER BY priority DESC, available_at, rowid LIMIT ?", (*queues, now, limit)
        ).fetchall()
        if not picked:  # another consumer was quicker
            return []
        rowids = [row[0] for row in picked]
        claimed = conn.execute(
            "UPDATE messages SET owner = ?, available_at = ?, deliveries = deliveries + 1"
            f" WHERE rowid IN ({marks(len(rowids))})"
            " RETURNING rowid, task_id, queue, body, deliveries",
            (owner, now + lease, *rowids),
        ).fetchall()
    order = {rowid: i for i, rowid in enumerate(rowids)}
    claimed.sort(key=lambda row: order[row[0]])
    return claimed


def _settle(
    conn: sqlite3.Connection, items: list[tuple[Delivery, bytes | None, float | None]]
) -> None:
    """Store results (where there is one) and ack their deliveries in one transaction."""
    with immediate(conn):
        for delivery, data, ttl in items:
            if data is not None:
                put_value(conn, "results", delivery.task_id, data, ttl)
            conn.execute(f"DELETE FROM messages WHERE {_OWNED}", _owned(delivery))


def _extend(conn: sqlite3.Connection, deliveries: Sequence[Delivery], lease: float) -> None:
    with immediate(conn):
        until = time.time() + lease
        conn.executemany(
            f"UPDATE messages SET available_at = ? WHERE {_OWNED}",
            [(until, *_owned(d)) for d in deliveries],
        )


def _release(
    conn: sqlite3.Connection, delivery: Delivery, body: bytes | None, delay: float
) -> None:
    with immediate(conn):
        now = time.time()
        eta = now + delay if delay > 0 else None
        conn.execute(
            "UPDATE messages SET body = COALESCE(?, body), available_at = ?, eta = ?,"
            f" owner = NULL WHERE {_OWNED}",
            (body, eta or now, eta, *_owned(delivery)),
        )


def _dead_letter(conn: sqlite3.Connection, delivery: Delivery, reason: str) -> None:
    with immediate(conn):
        receipt = _owned(delivery)
        rows = conn.execute(
            f"DELETE FROM messages WHERE {_OWNED} RETURNING queue, priority", receipt
        ).fetchall()
        if not rows:
            return
        queue, priority = rows[0]
        task_id = delivery.task_id or f"<row {receipt[0]}>"  # each id-less entry kept apart
        conn.execute(
            "INSERT OR REPLACE INTO dead_letters (task_id, queue, priority, body, reason,"
            " failed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (task_id, queue, priority, delivery.body, reason, time.time()),
        )


def _locate(conn: sqlite3.Connection, task_id: str) -> Location | None:
    row = conn.execute(
        "SELECT CASE WHEN available_at <= ? THEN 'waiting' WHEN owner IS NULL THEN 'delayed'"
        " ELSE 'leased' END FROM messages WHERE task_id = ?",
        (time.time(), task_id),
    ).fetchone()
    return None if row is None else cast(Location, row[0])


def _queue_stats(conn: sqlite3.Connection) -> list[QueueStats]:
    rows = conn.execute(
        "SELECT queue, SUM(available_at <= ?1), SUM(available_at > ?1 AND owner IS NULL),"
        " SUM(available_at > ?1 AND owner IS NOT NULL) FROM messages GROUP BY queue ORDER BY queue",
        (time.time(),),
    ).fetchall()
    return [QueueStats(name, ready, scheduled, running) for name, ready, scheduled, running in rows]


def _dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT task_id, queue, body, reason, failed_at, priority, rowid FROM dead_letters"
        " ORDER BY failed_at, rowid LIMIT ?",
        (limit,),
    ).fetchall()
    return [DeadLetter(t, q, bytes(b), r, f, p, rowid) for t, q, b, r, f, p, rowid in rows]


class SqliteTransport(SqliteClient, MessageTransport):
    """Messages in one SQLite file, safe for many processes at once.

    Args:
        path: the database file (created when missing; its directory must exist).
        lease_seconds: how long a delivery stays leased without `extend`.
        poll_interval: the longest pause between two looks at an empty queue.
        busy_timeout: seconds a statement waits for another process's write lock.
        db: the `SqliteDb` to share with the engine's state store and result store.
        results: the engine's result store in this file: a result for it is stored in the same
            transaction as the ack.
    """

    def __init__(
        self,
        path: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_interval: float = 0.05,
        busy_timeout: float = 30.0,
        db: SqliteDb | None = None,
        results: SqliteResultBackend | None = None,
    ) -> None:
        super().__init__(path, busy_timeout=busy_timeout, db=db)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self._results = results
        self._consumer = consumer_id()
        self._published = Signal()
        self._doorbell = doorbell(path)
        self._settles: Batcher[tuple[Delivery, bytes | None, float | None]] | None = None

    # -- messages -------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Insert messages in one transaction; ids already present are ignored."""
        if messages:
            await self._run(_publish, list(messages))
            now = time.time()
            if any(m.eta is None or m.eta <= now for m in messages):
                self._doorbell.ring()

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` ready messages, polling with backoff for up to `timeout`.

        An empty `queues` reads every queue.
        """
        queues = list(dict.fromkeys(queues))
        if max_count <= 0:
            return []
        self._doorbell.listen(self._published)
        deadline = time.monotonic() + timeout
        pause = min(0.002, self.poll_interval)
        while True:
            seen = self._published.generation
            await self._db.sweep_now_and_then()
            rows = await self._run(_claim, queues, max_count, self._consumer, self.lease_seconds)
            if rows:
                return [_delivery(row, self._consumer) for row in rows]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self._published.wait(seen, min(pause, left))
            pause = min(self.poll_interval, pause * 2)

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries this consumer still holds."""
        if deliveries:
            await self._run(_extend, list(deliveries), self.lease_seconds)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages this consumer still holds; others' claims are left alone."""
        if deliveries:
            await self._run(_settle, [(d, None, None) for d in deliveries])

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result and ack in one transaction when `results` is the engine's own; the
        settles of tasks finishing together share that transaction."""
        if results is not self._results:
            await super().ack_with_result(delivery, results, data, ttl)
            return
        self._settles = batcher_here(self._settles, functools.partial(self._run, _settle))
        await self._settles.submit((delivery, data, ttl))
        if data is not None:
            self._results.announce(delivery.task_id)
            await self._db.sweep_now_and_then()

    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` seconds."""
        await self._run(_release, delivery, body, delay)
        if delay <= 0:
            self._doorbell.ring()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to `dead_letters` with the reason."""
        await self._run(_dead_letter, delivery, reason)

    # -- admin reads and operations -------------------------------------------------------

    async def locate(self, task_id: str) -> Location | None:
        """Where the message is, or None when it is not held."""
        return await self._run(_locate, task_id)

    async def remove(self, task_id: str) -> bool:
        """Delete a waiting or delayed message; False when it is leased or not held."""
        sql = f"{_DELETE_WAITING}task_id = ?2"
        return bool(await self._run(rowcount, sql, (time.time(), task_id)))

    async def queue_stats(self) -> list[QueueStats]:
        """Return ready, scheduled and running counts of every queue holding messages."""
        return list(await self._run(_queue_stats))

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting (not running) messages of one queue or all; return how many."""
        sql = f"{_DELETE_WAITING}(?2 IS NULL OR queue = ?2)"
        return await self._run(rowcount, sql, (time.time(), queue))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        return list(await self._run(_dead_letters, limit))

    async def drop_dead(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters by row: a later failure of the same id replaced its row
        with a new one, which stays; how many were deleted."""
        rows = tuple(d.ref for d in letters if isinstance(d.ref, int))
        if not rows:
            return 0
        sql = f"DELETE FROM dead_letters WHERE rowid IN ({marks(len(rows))})"
        return await self._run(rowcount, sql, rows)
