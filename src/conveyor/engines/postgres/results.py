"""Results in PostgreSQL: `results` and `progress` rows keyed by task id with an expiry, and a
generator's items as `stream_items` numbered from 0 (the row numbered -1 marks the stream
closed; every row of a stream shares its expiry, renewed by each push).

A stored result is announced with `NOTIFY` on the schema's `done` channel (here, or in the
transport's ack statement), so `wait_result` sleeps until told instead of polling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from conveyor.engines.base import ResultBackend, StreamChunk
from conveyor.engines.postgres.db import Conn, PgDb

__all__ = ["PostgresResultBackend"]


class PostgresResultBackend(ResultBackend):
    """Keeps results, progress and generator streams in PostgreSQL, expiring after a TTL.

    Args:
        db: the database, usually shared with the engine's transport.
        default_ttl: seconds a result is kept when the task sets no `result_ttl`.
    """

    def __init__(self, db: PgDb, *, default_ttl: float | None = 24 * 3600.0) -> None:
        self.db = db
        self.default_ttl = default_ttl
        self._q = db.q

    async def startup(self) -> None:
        """Connect and create or migrate the schema."""
        await self.db.version()

    async def shutdown(self) -> None:
        """Close this process's connections."""
        await self.db.close()

    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the final result, replacing any earlier one, and announce it."""
        await self.db.fetchval(self._q["set_result"], task_id, data, ttl, self.db.done_channel)

    async def get_result(self, task_id: str) -> bytes | None:
        """The stored result, or None."""
        data: bytes | None = await self.db.fetchval(self._q["get_result"], task_id)
        return data

    async def watch(
        self, task_id: str, wake: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Have `wake()` called when the result of `task_id` is announced."""
        return await self.db.watch_done(task_id, wake)

    async def delete(self, task_id: str) -> None:
        """Forget the result, progress and stream of a task."""
        await self.db.execute(self._q["delete_results"], task_id)

    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report."""
        await self.db.execute(self._q["set_progress"], task_id, data, ttl)

    async def get_progress(self, task_id: str) -> bytes | None:
        """The latest progress report, or None."""
        data: bytes | None = await self.db.fetchval(self._q["get_progress"], task_id)
        return data

    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append items to a task's stream (an expired one starts afresh); renews its expiry."""
        if not items:
            return

        async def push(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(self._q["drop_expired_stream"], task_id)
                await conn.execute(self._q["push"], task_id, items)
                await conn.execute(self._q["renew_stream"], task_id, ttl)

        await self.db.call(push)

    async def reset_stream(self, task_id: str) -> None:
        """Drop a task's stream."""
        await self.db.execute(self._q["delete_stream"], task_id)

    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark a task's stream as finished (a stream of no items too)."""

        async def close(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(self._q["drop_expired_stream"], task_id)
                await conn.execute(self._q["close"], task_id)
                await conn.execute(self._q["renew_stream"], task_id, ttl)

        await self.db.call(close)

    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Items from `offset` on, the next offset, and whether the stream is closed."""
        rows = await self.db.fetch(self._q["read"], task_id, offset)
        items = [row["data"] for row in rows if row["seq"] >= 0]
        closed = bool(rows) and rows[0]["seq"] == -1
        return offset + len(items), items, closed
