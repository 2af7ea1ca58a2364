"""Results in PostgreSQL: `results` and `progress` rows keyed by task id with an expiry, and a
generator's items as `stream_items` numbered from 0 (the row numbered -1 marks the stream
closed; every row of a stream shares its expiry, renewed by each push).

A stored result is announced with `NOTIFY` on the schema's `done` channel (here, or in the
transport's ack statement), so `wait_result` sleeps until told instead of polling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from conveyor.engines.base import ResultBackend, StreamChunk
from conveyor.engines.postgres.db import NOW, Conn, PgDb

__all__ = ["PostgresResultBackend", "upsert"]

_LIVE: Final = f"(expires_at IS NULL OR expires_at > {NOW})"


def upsert(table: str, task: str = "$1", data: str = "$2", ttl: str = "$3") -> str:
    """The statement storing `data` under `task` in `table`, expiring after `ttl` seconds
    (NULL: never); the arguments name its parameters (the transport's ack statement has more)."""
    return (
        f"INSERT INTO {{s}}.{table} (task_id, data, expires_at) VALUES ({task}, {data},"
        f" {NOW} + {ttl}) ON CONFLICT (task_id) DO UPDATE SET data = EXCLUDED.data,"
        " expires_at = EXCLUDED.expires_at"
    )


_SQL: Final = {
    "set_result": f"WITH stored AS ({upsert('results')}) SELECT pg_notify($4, $1)",
    "get_result": f"SELECT data FROM {{s}}.results WHERE task_id = $1 AND {_LIVE}",
    "set_progress": upsert("progress"),
    "get_progress": f"SELECT data FROM {{s}}.progress WHERE task_id = $1 AND {_LIVE}",
    "drop_expired_stream": f"DELETE FROM {{s}}.stream_items WHERE task_id = $1 AND NOT {_LIVE}",
    "push": """
        WITH opened AS (DELETE FROM {s}.stream_items WHERE task_id = $1 AND seq = -1)
        INSERT INTO {s}.stream_items (task_id, seq, data)
        SELECT $1, last.n + u.i - 1, u.item
        FROM unnest($2::bytea[]) WITH ORDINALITY AS u(item, i),
            (SELECT coalesce(max(seq) + 1, 0) AS n FROM {s}.stream_items
             WHERE task_id = $1 AND seq >= 0) last""",
    "close": "INSERT INTO {s}.stream_items (task_id, seq) VALUES ($1, -1) ON CONFLICT DO NOTHING",
    "renew_stream": f"UPDATE {{s}}.stream_items SET expires_at = {NOW} + $2 WHERE task_id = $1",
    "read": f"""
        SELECT seq, data FROM {{s}}.stream_items
        WHERE task_id = $1 AND (seq >= $2 OR seq = -1) AND {_LIVE} ORDER BY seq""",
    "delete_stream": "DELETE FROM {s}.stream_items WHERE task_id = $1",
    "delete": """
        WITH r AS (DELETE FROM {s}.results WHERE task_id = $1),
        p AS (DELETE FROM {s}.progress WHERE task_id = $1)
        DELETE FROM {s}.stream_items WHERE task_id = $1""",
}


class PostgresResultBackend(ResultBackend):
    """Keeps results, progress and generator streams in PostgreSQL, expiring after a TTL.

    Args:
        db: the database, usually shared with the engine's transport.
        default_ttl: seconds a result is kept when the task sets no `result_ttl`.
    """

    def __init__(self, db: PgDb, *, default_ttl: float | None = 24 * 3600.0) -> None:
        self.db = db
        self.default_ttl = default_ttl
        self._sql = {name: db.sql(text) for name, text in _SQL.items()}

    async def startup(self) -> None:
        """Connect and create or migrate the schema."""
        await self.db.version()

    async def shutdown(self) -> None:
        """Close this process's connections."""
        await self.db.close()

    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the final result, replacing any earlier one, and announce it."""
        await self.db.fetchval(self._sql["set_result"], task_id, data, ttl, self.db.done_channel)

    async def get_result(self, task_id: str) -> bytes | None:
        """The stored result, or None."""
        data: bytes | None = await self.db.fetchval(self._sql["get_result"], task_id)
        return data

    async def watch(
        self, task_id: str, wake: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Have `wake()` called when the result of `task_id` is announced."""
        return await self.db.watch_done(task_id, wake)

    async def delete(self, task_id: str) -> None:
        """Forget the result, progress and stream of a task."""
        await self.db.execute(self._sql["delete"], task_id)

    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report."""
        await self.db.execute(self._sql["set_progress"], task_id, data, ttl)

    async def get_progress(self, task_id: str) -> bytes | None:
        """The latest progress report, or None."""
        data: bytes | None = await self.db.fetchval(self._sql["get_progress"], task_id)
        return data

    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append items to a task's stream (an expired one starts afresh); renews its expiry."""
        if not items:
            return

        async def push(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(self._sql["drop_expired_stream"], task_id)
                await conn.execute(self._sql["push"], task_id, items)
                await conn.execute(self._sql["renew_stream"], task_id, ttl)

        await self.db.call(push)

    async def reset_stream(self, task_id: str) -> None:
        """Drop a task's stream."""
        await self.db.execute(self._sql["delete_stream"], task_id)

    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark a task's stream as finished (a stream of no items too)."""

        async def close(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(self._sql["drop_expired_stream"], task_id)
                await conn.execute(self._sql["close"], task_id)
                await conn.execute(self._sql["renew_stream"], task_id, ttl)

        await self.db.call(close)

    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Items from `offset` on, the next offset, and whether the stream is closed."""
        rows = await self.db.fetch(self._sql["read"], task_id, offset)
        items = [row["data"] for row in rows if row["seq"] >= 0]
        closed = bool(rows) and rows[0]["seq"] == -1
        return offset + len(items), items, closed
