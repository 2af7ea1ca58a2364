"""The embedded result store: the same SQLite file as `SqliteTransport`.

Results and progress reports are rows of `results` and `progress` keyed by task id with an
`expires_at`; a generator's items are rows of `stream_items` numbered from 0, and
`streams` holds each stream's length, closed flag and expiry. Expired rows read as absent and are
deleted now and then.
"""

from __future__ import annotations

import sqlite3
import time

from conveyor.engines.base import ResultBackend, StreamChunk
from conveyor.engines.loops import Signal
from conveyor.engines.sqlite.db import (
    LIVE,
    SqliteClient,
    SqliteDb,
    expiry,
    get_value,
    immediate,
    put_value,
)

__all__ = ["SqliteResultBackend"]

_MAX_PAUSE = 0.05
_LIVE_STREAM = f"task_id = ? AND {LIVE}"
_Tables = tuple[tuple[str, str], ...]
#: A task's stream, and everything kept for a task: tables and their task id column.
_STREAM: _Tables = (("stream_items", "task_id"), ("streams", "task_id"))
_EVERYTHING: _Tables = (("results", "key"), ("progress", "key"), *_STREAM)


def _write(
    conn: sqlite3.Connection, task_id: str, items: list[bytes], closed: bool, ttl: float | None
) -> None:
    """Append `items` to a task's stream, set its closed flag and renew its expiry."""
    with immediate(conn):
        now = time.time()
        row = conn.execute(f"SELECT length FROM streams WHERE {_LIVE_STREAM}", (task_id, now))
        length = (row.fetchone() or (None,))[0]
        if length is None:  # a new stream, or an expired one not yet swept: start afresh
            conn.execute("DELETE FROM stream_items WHERE task_id = ?", (task_id,))
            length = 0
        conn.executemany(
            "INSERT INTO stream_items (task_id, seq, data) VALUES (?, ?, ?)",
            [(task_id, length + i, item) for i, item in enumerate(items)],
        )
        conn.execute(
            "INSERT OR REPLACE INTO streams (task_id, length, closed, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (task_id, length + len(items), int(closed), expiry(ttl, now)),
        )


def _read(conn: sqlite3.Connection, task_id: str, offset: int) -> StreamChunk:
    # Items first, then the length: a push in between can only make `closed` read False.
    sql = "SELECT data FROM stream_items WHERE task_id = ? AND seq >= ? ORDER BY seq"
    items = [bytes(row[0]) for row in conn.execute(sql, (task_id, offset))]
    meta = conn.execute(
        f"SELECT length, closed FROM streams WHERE {_LIVE_STREAM}", (task_id, time.time())
    ).fetchone()
    if meta is None:
        return offset, [], False
    following = offset + len(items)
    return following, items, bool(meta[1]) and following >= meta[0]


def _delete(conn: sqlite3.Connection, task_id: str, tables: _Tables) -> None:
    """Delete a task's rows of these tables (each with its task id column), in one transaction."""
    with immediate(conn):
        for table, column in tables:
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (task_id,))


class SqliteResultBackend(SqliteClient, ResultBackend):
    """Results, progress and streams in a SQLite file, shared by every process.

    `wait_result` polls with a growing pause (up to 50 ms), and wakes at once for a result
    stored by this same backend object.

    Args:
        path: the database file; usually the one the `SqliteTransport` uses.
        default_ttl: seconds a result is kept when the task sets no `result_ttl`.
        busy_timeout: seconds a statement waits for another process's write lock.
        db: the `SqliteDb` to share with the engine's transport and state store.
    """

    def __init__(
        self,
        path: str,
        *,
        default_ttl: float | None = 24 * 3600.0,
        busy_timeout: float = 30.0,
        db: SqliteDb | None = None,
    ) -> None:
        super().__init__(path, busy_timeout=busy_timeout, db=db)
        self.default_ttl = default_ttl
        self._stored: dict[str, Signal] = {}

    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the final result, replacing any earlier one, and wake local waiters."""
        await self._run(put_value, "results", task_id, data, ttl)
        self.announce(task_id)
        await self._db.sweep_now_and_then()

    def announce(self, task_id: str) -> None:
        """Wake this process's waiters of a result stored by someone else (the transport)."""
        signal = self._stored.get(task_id)
        if signal is not None:
            signal.notify()

    async def get_result(self, task_id: str) -> bytes | None:
        """Return the stored result, or None."""
        return await self._run(get_value, "results", task_id)

    async def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Return the result once stored, or None after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        signal = self._stored.setdefault(task_id, Signal())
        signal.users += 1
        pause = 0.001
        try:
            while True:
                seen = signal.generation
                data = await self.get_result(task_id)
                if data is not None:
                    return data
                left = _MAX_PAUSE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return None
                await signal.wait(seen, min(pause, left))
                pause = min(pause * 2, _MAX_PAUSE)
        finally:
            signal.users -= 1
            if not signal.users:
                del self._stored[task_id]

    async def delete(self, task_id: str) -> None:
        """Forget the result, progress and stream of a task."""
        await self._run(_delete, task_id, _EVERYTHING)

    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report."""
        await self._run(put_value, "progress", task_id, data, ttl)

    async def get_progress(self, task_id: str) -> bytes | None:
        """Return the latest progress report, or None."""
        return await self._run(get_value, "progress", task_id)

    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append items to a task's stream; each push renews its expiry."""
        if items:
            await self._run(_write, task_id, list(items), False, ttl)

    async def reset_stream(self, task_id: str) -> None:
        """Drop a task's stream."""
        await self._run(_delete, task_id, _STREAM)

    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark a task's stream as finished."""
        await self._run(_write, task_id, [], True, ttl)

    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Return items from `offset` on, the next offset, and whether the stream is closed."""
        return await self._run(_read, task_id, offset)
