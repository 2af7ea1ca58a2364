"""The PostgreSQL state store: values in `kv`, sets in `set_members`, the grants of sliding
rate windows in `rate_grants`. Each primitive is one statement, or one transaction where it
reads before it writes (a set's size, a rate window, under an advisory lock of its key), so it
is atomic across every process using the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.engines.base import StateStore
from conveyor.engines.kit import check_window
from conveyor.engines.postgres.db import Conn, PgDb
from conveyor.errors import BrokerError

__all__ = ["PostgresStore"]


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class PostgresStore(StateStore):
    """`StateStore` in PostgreSQL tables, shared by every process of the app.

    Args:
        db: the database, usually shared with the engine's transport.
    """

    def __init__(self, db: PgDb) -> None:
        self.db = db
        self.safe_url = db.safe_url
        self._q = db.q

    async def startup(self) -> None:
        """Connect and create or migrate the schema."""
        await self.db.version()

    async def shutdown(self) -> None:
        """Close this process's connections."""
        await self.db.close()

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        value: bytes | None = await self.db.fetchval(self._q["get"], key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order."""
        if not keys:
            return []
        rows = await self.db.fetch(self._q["get_many"], list(keys))
        found = {row["key"]: row["value"] for row in rows}
        return [found.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self.db.execute(self._q["set"], key, value, ttl)

    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        return await self.db.fetchval(self._q["set_nx"], key, value, ttl) is not None

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""
        return bool(await self.db.fetchval(self._q["delete"], key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key; `ttl` applies when this call creates it."""
        try:
            return int(await self.db.fetchval(self._q["incr"], key, amount, ttl))
        except BrokerError as exc:
            raise BrokerError(f"key {key!r} does not hold an integer: {exc}") from None

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        rows = await self.db.fetch(self._q["scan"], _like_prefix(prefix))
        return {row["key"]: row["value"] for row in rows}

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; `ttl` renews its expiry."""

        async def add(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute(self._q["lock"], f"{self.db.schema}:set:{key}")
                await conn.execute(self._q["set_expired"], key)
                await conn.execute(self._q["set_add"], key, member, ttl)
                if ttl is not None:
                    await conn.execute(self._q["set_renew"], key, ttl)
                return int(await conn.fetchval(self._q["set_size"], key))

        return await self.db.call(add)

    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period`, shared by every process."""
        check_window(limit, period)

        async def acquire(conn: Conn) -> float:
            async with conn.transaction():
                await conn.execute(self._q["lock"], f"{self.db.schema}:rate:{key}")
                await conn.execute(self._q["window_expired"], key)
                count, oldest_left = await conn.fetchrow(self._q["window"], key) or (0, 0.0)
                if count < limit:
                    await conn.execute(self._q["grant"], key, period)
                    return 0.0
            return max(float(oldest_left), 1e-6)

        return await self.db.call(acquire)
