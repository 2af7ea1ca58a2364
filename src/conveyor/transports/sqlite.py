"""The embedded transport: one SQLite file, many producer and worker processes, no server.

Layout (all in the one file, see `_sqlite_db`): `messages` holds every message until it is acked,
with `available_at` the time it may next be handed out (its ETA, its retry time, or the end of
its lease) and `owner` the consumer that leased it; `dead_letters`, `cancels`, `kv` and `rates`
hold the rest. A claim is one short `BEGIN IMMEDIATE` transaction, so two consumers never lease
the same delivery. A delivery's receipt is (owner, deliveries), so it settles or extends only
the claim it came from, never a later claim of the same message after its lease ran out. A
receive cancelled while its claim runs loses nothing: those messages return when the lease ends.

Publishing a `task_id` that is already in `messages` is ignored: the first copy stays.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from conveyor._signal import Signal
from conveyor.errors import ConfigurationError
from conveyor.results.base import ResultBackend
from conveyor.transports._sqlite_db import (
    Coalescer,
    SqliteClient,
    SqliteDb,
    expiry,
    get_value,
    immediate,
    incr,
    put_value,
    rate_acquire,
    scan_values,
    set_nx,
)
from conveyor.transports.base import (
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
    TransportState,
)

__all__ = ["SqliteTransport"]

T = TypeVar("T")

_CANCEL_TTL = 3600.0
_Row = tuple[Any, ...]

_INSERT = (
    "INSERT OR IGNORE INTO messages (task_id, queue, priority, body, available_at, eta, owner,"
    " deliveries, retrying, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, NULL, 0, 0, ?)"
)
_OWNED = "task_id = ? AND owner = ? AND deliveries = ?"


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _receipt(delivery: Delivery) -> tuple[str, int]:
    receipt = delivery.receipt
    if isinstance(receipt, tuple) and len(receipt) == 2:
        return str(receipt[0]), int(receipt[1])
    return "", -1  # not one of ours: matches no row


def _owned(delivery: Delivery) -> tuple[str, str, int]:
    owner, count = _receipt(delivery)
    return delivery.task_id, owner, count


def _classify(row: _Row | None, now: float) -> TransportState | None:
    if row is None:
        return None
    owner, available_at, retrying = row
    if available_at > now:
        if owner is not None:
            return "running"
        return "retrying" if retrying else "scheduled"
    return "retrying" if retrying else "queued"


# -- statements, run on the database thread -------------------------------------------------


def _publish(conn: sqlite3.Connection, messages: Sequence[Outgoing]) -> None:
    now = time.time()
    rows = [
        (m.task_id, m.queue, m.priority, m.body, now if m.eta is None else m.eta, m.eta, now)
        for m in messages
    ]
    with immediate(conn):
        conn.executemany(_INSERT, rows)


def _ready_filter(queues: Sequence[str]) -> str:
    """The WHERE clause of ready messages in `queues` (every queue when empty)."""
    if not queues:
        return "available_at <= ?"
    return f"queue IN ({_marks(len(queues))}) AND available_at <= ?"


def _claim(
    conn: sqlite3.Connection, queues: Sequence[str], limit: int, owner: str, lease: float
) -> list[_Row]:
    ready = f"SELECT rowid FROM messages WHERE {_ready_filter(queues)}"
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
            "UPDATE messages SET owner = ?, available_at = ?, deliveries = deliveries + 1,"
            f" retrying = 0 WHERE rowid IN ({_marks(len(rowids))})"
            " RETURNING rowid, task_id, queue, body, deliveries",
            (owner, now + lease, *rowids),
        ).fetchall()
    order = {rowid: i for i, rowid in enumerate(rowids)}
    claimed.sort(key=lambda row: order[row[0]])
    return claimed


def _ack(conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    with immediate(conn):
        for delivery in deliveries:
            if conn.execute(f"DELETE FROM messages WHERE {_OWNED}", _owned(delivery)).rowcount:
                conn.execute("DELETE FROM cancels WHERE task_id = ?", (delivery.task_id,))


def _settle(
    conn: sqlite3.Connection, items: list[tuple[Delivery, bytes | None, float | None]]
) -> None:
    """Store results and ack their deliveries in one transaction (`ack_with_result`, batched)."""
    with immediate(conn):
        for delivery, data, ttl in items:
            if data is not None:
                put_value(conn, "results", delivery.task_id, data, ttl)
            if conn.execute(f"DELETE FROM messages WHERE {_OWNED}", _owned(delivery)).rowcount:
                conn.execute("DELETE FROM cancels WHERE task_id = ?", (delivery.task_id,))


def _extend(conn: sqlite3.Connection, deliveries: Sequence[Delivery], lease: float) -> None:
    with immediate(conn):
        until = time.time() + lease
        conn.executemany(
            f"UPDATE messages SET available_at = ? WHERE {_OWNED}",
            [(until, *_owned(d)) for d in deliveries],
        )


def _release(
    conn: sqlite3.Connection, delivery: Delivery, body: bytes | None, delay: float, retrying: bool
) -> None:
    with immediate(conn):
        now = time.time()
        eta = now + delay if delay > 0 else None
        conn.execute(
            "UPDATE messages SET body = COALESCE(?, body), available_at = ?, eta = ?,"
            f" owner = NULL, retrying = ? WHERE {_OWNED}",
            (body, eta or now, eta, int(retrying), *_owned(delivery)),
        )


def _dead_letter(conn: sqlite3.Connection, delivery: Delivery, reason: str) -> None:
    with immediate(conn):
        rows = conn.execute(
            f"DELETE FROM messages WHERE {_OWNED} RETURNING queue, priority, body",
            _owned(delivery),
        ).fetchall()
        if not rows:
            return
        queue, priority, body = rows[0]
        conn.execute("DELETE FROM cancels WHERE task_id = ?", (delivery.task_id,))
        conn.execute(
            "INSERT OR REPLACE INTO dead_letters (task_id, queue, priority, body, reason,"
            " failed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (delivery.task_id, queue, priority, body, reason, time.time()),
        )


def _requeue_dead(conn: sqlite3.Connection, task_ids: Sequence[str] | None) -> int:
    sql = "SELECT task_id, queue, priority, body FROM dead_letters"
    params: tuple[str, ...] = ()
    if task_ids is not None:
        sql += f" WHERE task_id IN ({_marks(len(task_ids))})"
        params = tuple(task_ids)
    moved = 0
    with immediate(conn):
        now = time.time()
        for task_id, queue, priority, body in conn.execute(sql, params).fetchall():
            cursor = conn.execute(_INSERT, (task_id, queue, priority, body, now, None, now))
            moved += cursor.rowcount
            conn.execute("DELETE FROM dead_letters WHERE task_id = ?", (task_id,))
    return moved


def _cancel(conn: sqlite3.Connection, task_id: str) -> bool:
    with immediate(conn):
        now = time.time()
        removed = conn.execute(
            "DELETE FROM messages WHERE task_id = ? AND (owner IS NULL OR available_at <= ?)",
            (task_id, now),
        ).rowcount
        if removed:
            return True
        conn.execute(
            "INSERT OR REPLACE INTO cancels (task_id, expires_at) VALUES (?, ?)",
            (task_id, now + _CANCEL_TTL),
        )
    return False


def _set_add(conn: sqlite3.Connection, key: str, member: str, ttl: float | None) -> int:
    """A set is one `kv` row per member, keyed "<RS>set:<key><US><member>" (ASCII record and
    unit separators, so a set never shows in a `kv_scan` of a printable prefix)."""
    low = f"\x1eset:{key}\x1f"
    high = f"\x1eset:{key}\x20"
    with immediate(conn):
        now = time.time()
        in_set = "key >= ? AND key < ?"
        conn.execute(f"DELETE FROM kv WHERE {in_set} AND expires_at <= ?", (low, high, now))
        row = conn.execute(f"SELECT expires_at FROM kv WHERE {in_set} LIMIT 1", (low, high))
        found = row.fetchone()
        expires_at = expiry(ttl, now) if ttl is not None or found is None else found[0]
        conn.execute(
            "INSERT OR IGNORE INTO kv (key, value, expires_at) VALUES (?, x'', ?)",
            (low + member, expires_at),
        )
        if ttl is not None:
            conn.execute(f"UPDATE kv SET expires_at = ? WHERE {in_set}", (expires_at, low, high))
        count = conn.execute(f"SELECT COUNT(*) FROM kv WHERE {in_set}", (low, high)).fetchone()
    return int(count[0])


def _queue_stats(conn: sqlite3.Connection) -> list[QueueStats]:
    rows = conn.execute(
        "SELECT queue, SUM(available_at <= ?1), SUM(available_at > ?1 AND owner IS NULL),"
        " SUM(available_at > ?1 AND owner IS NOT NULL) FROM messages GROUP BY queue ORDER BY queue",
        (time.time(),),
    ).fetchall()
    return [QueueStats(name, ready, scheduled, running) for name, ready, scheduled, running in rows]


class SqliteTransport(SqliteClient, Transport):
    """Messages and small state in one SQLite file, safe for many processes at once.

    Args:
        path: the database file (created when missing; its directory must exist).
        lease_seconds: how long a delivery stays leased without `extend`.
        poll_interval: the longest pause between two looks at an empty queue.
        busy_timeout: seconds a statement waits for another process's write lock.
        db: a `SqliteDb` to share with a `SqliteResultBackend`; by default one of its own.
    """

    tracks_state = True

    def __init__(
        self,
        path: str,
        *,
        lease_seconds: float = 10.0,
        poll_interval: float = 0.05,
        busy_timeout: float = 30.0,
        db: SqliteDb | None = None,
    ) -> None:
        super().__init__(path, db, busy_timeout)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._published = Signal()
        self._settles: Coalescer[tuple[Delivery, bytes | None, float | None]] | None = None

    # -- messages -------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Insert messages in one transaction; ids already present are ignored."""
        if messages:
            await self._run(_publish, list(messages))
            self._published.notify()

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` ready messages, polling with backoff for up to `timeout`.

        An empty `queues` reads every queue.
        """
        queues = list(dict.fromkeys(queues))
        if max_count <= 0:
            return []
        deadline = time.monotonic() + timeout
        pause = min(0.002, self.poll_interval)
        while True:
            seen = self._published.generation
            await self._db.sweep_now_and_then()
            rows = await self._run(_claim, queues, max_count, self._consumer, self.lease_seconds)
            if rows:
                return [Delivery(t, q, bytes(b), n, (self._consumer, n)) for _, t, q, b, n in rows]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await self._published.wait(seen, min(pause, left))
            pause = min(self.poll_interval, pause * 2)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages this consumer still holds; others' claims are left alone."""
        if deliveries:
            await self._run(_ack, list(deliveries))

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result and ack in one transaction when `results` is this file; the settles
        of tasks finishing together share that transaction."""
        from conveyor.results.sqlite import SqliteResultBackend

        if not (isinstance(results, SqliteResultBackend) and results.same_file(self.path)):
            await super().ack_with_result(delivery, results, data, ttl)
            return
        if self._settles is None or self._settles.loop is not asyncio.get_running_loop():
            await self.startup()
            self._settles = Coalescer(self._db, _settle)
        await self._settles.submit((delivery, data, ttl))
        if data is not None:
            results.announce(delivery.task_id)
            await self._db.sweep_now_and_then()

    async def release(
        self,
        delivery: Delivery,
        *,
        body: bytes | None = None,
        delay: float = 0.0,
        retrying: bool = False,
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` seconds."""
        await self._run(_release, delivery, body, delay, retrying)
        self._published.notify()

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the lease of deliveries this consumer still holds."""
        if deliveries:
            await self._run(_extend, list(deliveries), self.lease_seconds)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to `dead_letters` with the reason."""
        await self._run(_dead_letter, delivery, reason)

    # -- cancellation and state -----------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Delete a waiting message (True), or record the request for a running one (False)."""
        return bool(await self._run(_cancel, task_id))

    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Return which of these task ids have a live cancel request."""
        if not task_ids:
            return set()
        sql = (
            "SELECT task_id FROM cancels"
            f" WHERE expires_at > ? AND task_id IN ({_marks(len(task_ids))})"
        )

        def select(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(sql, (time.time(), *task_ids))}

        return set(await self._run(select))

    async def state(self, task_id: str) -> TransportState | None:
        """Return "queued", "scheduled", "running" or "retrying", or None when not held."""

        def select(conn: sqlite3.Connection) -> TransportState | None:
            row = conn.execute(
                "SELECT owner, available_at, retrying FROM messages WHERE task_id = ?", (task_id,)
            ).fetchone()
            return _classify(row, time.time())

        return await self._run(select)

    # -- inspection and operations ----------------------------------------------------------

    async def queue_stats(self) -> list[QueueStats]:
        """Return ready, scheduled and running counts of every queue holding messages."""
        return list(await self._run(_queue_stats))

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting (not running) messages of one queue or all; return how many."""

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM messages WHERE (?1 IS NULL OR queue = ?1)"
                " AND (owner IS NULL OR available_at <= ?2)",
                (queue, time.time()),
            ).rowcount

        return int(await self._run(delete))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead-lettered messages, oldest first."""

        def select(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT task_id, queue, body, reason, failed_at FROM dead_letters"
                " ORDER BY failed_at, rowid LIMIT ?",
                (limit,),
            ).fetchall()
            return [DeadLetter(t, q, bytes(b), r, f) for t, q, b, r, f in rows]

        return list(await self._run(select))

    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead-lettered messages (all when None) back to their queues; return how many."""
        moved = int(await self._run(_requeue_dead, None if task_ids is None else list(task_ids)))
        self._published.notify()
        return moved

    # -- small atomic state -----------------------------------------------------------------

    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent or expired; return True when this call stored it."""
        return await self._run(set_nx, key, value, ttl)

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `key`, replacing any value, expiring after `ttl` seconds when given."""
        await self._run(put_value, "kv", key, value, ttl)

    async def kv_get(self, key: str) -> bytes | None:
        """Return the value of a live key, or None."""
        return await self._run(get_value, "kv", key)

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Return every live key starting with `prefix` with its value."""
        return await self._run(scan_values, "kv", prefix)

    async def kv_delete(self, key: str) -> None:
        """Delete a key if present."""
        await self._run(lambda conn: conn.execute("DELETE FROM kv WHERE key = ?", (key,)))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add `amount` to an integer key and return the new value.

        `ttl` applies when the call creates the key; a live key keeps its expiry.
        """
        return await self._run(incr, key, amount, ttl)

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; `ttl` renews its expiry."""
        return await self._run(_set_add, key, member, ttl)

    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period`, shared by every process.

        Returns 0.0 when granted, else the seconds until the oldest grant leaves the window.
        """
        if limit < 1 or period <= 0:
            raise ConfigurationError(
                f"a rate limit needs limit >= 1 and period > 0: {limit}/{period}"
            )
        return await self._run(rate_acquire, key, limit, period)
