"""The SQLite state store: keys in `kv`, sets in `sets`/`set_members`, rate windows in `rates`,
in the same file as the queues. Each primitive is one statement or one `BEGIN IMMEDIATE`
transaction, so it is atomic across every process using the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from conveyor.engines.base import StateStore
from conveyor.engines.kit import check_window
from conveyor.engines.sqlite.db import (
    LIVE,
    SqliteClient,
    expiry,
    get_value,
    immediate,
    marks,
    put_value,
)
from conveyor.errors import BrokerError

__all__ = ["SqliteStore"]


def _get_many(conn: sqlite3.Connection, keys: Sequence[str]) -> list[bytes | None]:
    rows = conn.execute(
        f"SELECT key, value FROM kv WHERE key IN ({marks(len(keys))}) AND {LIVE}",
        (*keys, time.time()),
    ).fetchall()
    found = {key: bytes(value) for key, value in rows}
    return [found.get(key) for key in keys]


def _set_nx(conn: sqlite3.Connection, key: str, value: bytes, ttl: float | None) -> bool:
    now = time.time()
    cursor = conn.execute(
        "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)"
        " ON CONFLICT (key) DO UPDATE SET value = ?2, expires_at = ?3"
        " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?4",
        (key, value, expiry(ttl, now), now),
    )
    return cursor.rowcount == 1


def _delete(conn: sqlite3.Connection, key: str) -> bool:
    rows = conn.execute("DELETE FROM kv WHERE key = ? RETURNING expires_at", (key,)).fetchall()
    return bool(rows) and (rows[0][0] is None or rows[0][0] > time.time())


def _incr(conn: sqlite3.Connection, key: str, amount: int, ttl: float | None) -> int:
    with immediate(conn):
        now = time.time()
        row = conn.execute(
            f"SELECT value, expires_at FROM kv WHERE key = ? AND {LIVE}", (key, now)
        ).fetchone()
        try:
            value = amount + (int(row[0]) if row else 0)
        except ValueError:
            raise BrokerError(f"key {key!r} does not hold an integer") from None
        conn.execute(
            "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
            (key, str(value).encode(), row[1] if row else expiry(ttl, now)),
        )
    return value


def _scan(conn: sqlite3.Connection, prefix: str) -> dict[str, bytes]:
    sql = f"SELECT key, value FROM kv WHERE {LIVE} AND key >= ?"
    params: tuple[object, ...] = (time.time(), prefix)
    if prefix and ord(prefix[-1]) < 0x10FFFF:
        # Every key starting with `prefix` sorts below the prefix with its last char bumped.
        sql += " AND key < ?"
        params += (prefix[:-1] + chr(ord(prefix[-1]) + 1),)
    rows = conn.execute(sql, params).fetchall()
    return {key: bytes(value) for key, value in rows if key.startswith(prefix)}


def _set_add(conn: sqlite3.Connection, key: str, member: str, ttl: float | None) -> int:
    with immediate(conn):
        now = time.time()
        row = conn.execute("SELECT expires_at FROM sets WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] is not None and row[0] <= now:  # expired: start afresh
            conn.execute("DELETE FROM set_members WHERE key = ?", (key,))
            row = None
        expires_at = expiry(ttl, now) if ttl is not None or row is None else row[0]
        conn.execute(
            "INSERT OR REPLACE INTO sets (key, expires_at) VALUES (?, ?)", (key, expires_at)
        )
        conn.execute("INSERT OR IGNORE INTO set_members (key, member) VALUES (?, ?)", (key, member))
        count = conn.execute("SELECT COUNT(*) FROM set_members WHERE key = ?", (key,)).fetchone()
    return int(count[0])


def _window_acquire(conn: sqlite3.Connection, key: str, limit: int, period: float) -> float:
    """A sliding log, one row per grant still inside the window, checked and written under the
    write lock: exact across processes."""
    with immediate(conn):
        now = time.time()
        conn.execute("DELETE FROM rates WHERE key = ? AND at <= ?", (key, now - period))
        count, oldest = conn.execute(
            "SELECT COUNT(*), MIN(at) FROM rates WHERE key = ?", (key,)
        ).fetchone()
        if count < limit:
            conn.execute("INSERT INTO rates (key, at, period) VALUES (?, ?, ?)", (key, now, period))
            return 0.0
    return max(float(oldest) + period - now, 1e-6)


class SqliteStore(SqliteClient, StateStore):
    """`StateStore` in a SQLite file, shared by every process that opens it.

    Args:
        path: the database file (created when missing; its directory must exist).
        busy_timeout: seconds a statement waits for another process's write lock.
        db: the `SqliteDb` to share with the engine's transport and result store.
    """

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        return await self._run(get_value, "kv", key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order."""
        if not keys:
            return []
        return await self._run(_get_many, list(keys))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self._run(put_value, "kv", key, value, ttl)

    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        return await self._run(_set_nx, key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""
        return await self._run(_delete, key)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key; `ttl` applies when this call creates it."""
        return await self._run(_incr, key, amount, ttl)

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        return await self._run(_scan, prefix)

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; `ttl` renews its expiry."""
        return await self._run(_set_add, key, member, ttl)

    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period`, shared by every process."""
        check_window(limit, period)
        return await self._run(_window_acquire, key, limit, period)
