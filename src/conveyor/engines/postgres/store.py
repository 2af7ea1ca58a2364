"""The PostgreSQL state store: values in `kv`, sets in `set_members`, the grants of sliding
rate windows in `rate_grants`. Each primitive is one statement, or one transaction where it
reads before it writes (a set's size, a rate window, under an advisory lock of its key), so it
is atomic across every process using the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from conveyor.engines.base import StateStore
from conveyor.engines.postgres.db import NOW, Conn, PgDb
from conveyor.errors import BrokerError, ConfigurationError

__all__ = ["PostgresStore"]

_LIVE: Final = f"(expires_at IS NULL OR expires_at > {NOW})"
_SQL: Final = {
    "get": f"SELECT value FROM {{s}}.kv WHERE key = $1 AND {_LIVE}",
    "get_many": f"SELECT key, value FROM {{s}}.kv WHERE key = ANY($1::text[]) AND {_LIVE}",
    "set": f"INSERT INTO {{s}}.kv (key, value, expires_at) VALUES ($1, $2, {NOW} + $3)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
    "set_nx": f"INSERT INTO {{s}}.kv AS k (key, value, expires_at) VALUES ($1, $2, {NOW} + $3)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"
    f" WHERE k.expires_at IS NOT NULL AND k.expires_at <= {NOW} RETURNING 1",
    "delete": f"DELETE FROM {{s}}.kv WHERE key = $1 RETURNING {_LIVE}",
    "incr": f"""
        INSERT INTO {{s}}.kv AS k (key, value, expires_at)
        VALUES ($1, convert_to($2::int8::text, 'UTF8'), {NOW} + $3)
        ON CONFLICT (key) DO UPDATE SET
            value = convert_to((CASE WHEN k.expires_at IS NULL OR k.expires_at > {NOW}
                THEN convert_from(k.value, 'UTF8')::int8 ELSE 0 END + $2)::text, 'UTF8'),
            expires_at = CASE WHEN k.expires_at IS NULL OR k.expires_at > {NOW}
                THEN k.expires_at ELSE EXCLUDED.expires_at END
        RETURNING convert_from(value, 'UTF8')::int8""",
    "scan": f"SELECT key, value FROM {{s}}.kv WHERE key LIKE $1 AND {_LIVE}",
    "lock": "SELECT pg_advisory_xact_lock(hashtext($1))",
    "set_expired": f"DELETE FROM {{s}}.set_members WHERE key = $1 AND NOT {_LIVE}",
    "set_add": f"""
        INSERT INTO {{s}}.set_members (key, member, expires_at)
        SELECT $1, $2, coalesce({NOW} + $3,
            (SELECT max(expires_at) FROM {{s}}.set_members WHERE key = $1))
        ON CONFLICT DO NOTHING""",
    "set_renew": f"UPDATE {{s}}.set_members SET expires_at = {NOW} + $2 WHERE key = $1",
    "set_size": "SELECT count(*) FROM {s}.set_members WHERE key = $1",
    "window_expired": f"DELETE FROM {{s}}.rate_grants WHERE key = $1 AND expires_at <= {NOW}",
    "window": f"SELECT count(*), min(expires_at) - {NOW} FROM {{s}}.rate_grants WHERE key = $1",
    "grant": f"INSERT INTO {{s}}.rate_grants (key, expires_at) VALUES ($1, {NOW} + $2)",
}


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
        self._sql = {name: db.sql(text) for name, text in _SQL.items()}

    async def startup(self) -> None:
        """Connect and create or migrate the schema."""
        await self.db.version()

    async def shutdown(self) -> None:
        """Close this process's connections."""
        await self.db.close()

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        value: bytes | None = await self.db.fetchval(self._sql["get"], key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order."""
        if not keys:
            return []
        rows = await self.db.fetch(self._sql["get_many"], list(keys))
        found = {row["key"]: row["value"] for row in rows}
        return [found.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self.db.execute(self._sql["set"], key, value, ttl)

    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        return await self.db.fetchval(self._sql["set_nx"], key, value, ttl) is not None

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""
        return bool(await self.db.fetchval(self._sql["delete"], key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key; `ttl` applies when this call creates it."""
        try:
            return int(await self.db.fetchval(self._sql["incr"], key, amount, ttl))
        except BrokerError as exc:
            raise BrokerError(f"key {key!r} does not hold an integer: {exc}") from None

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        rows = await self.db.fetch(self._sql["scan"], _like_prefix(prefix))
        return {row["key"]: row["value"] for row in rows}

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; `ttl` renews its expiry."""

        async def add(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute(self._sql["lock"], f"{self.db.schema}:set:{key}")
                await conn.execute(self._sql["set_expired"], key)
                await conn.execute(self._sql["set_add"], key, member, ttl)
                if ttl is not None:
                    await conn.execute(self._sql["set_renew"], key, ttl)
                return int(await conn.fetchval(self._sql["set_size"], key))

        return await self.db.call(add)

    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period`, shared by every process."""
        if limit < 1 or period <= 0:
            raise ConfigurationError(
                f"a rate limit needs limit >= 1 and period > 0, not {limit}/{period}"
            )

        async def acquire(conn: Conn) -> float:
            async with conn.transaction():
                await conn.execute(self._sql["lock"], f"{self.db.schema}:rate:{key}")
                await conn.execute(self._sql["window_expired"], key)
                count, oldest_left = await conn.fetchrow(self._sql["window"], key) or (0, 0.0)
                if count < limit:
                    await conn.execute(self._sql["grant"], key, period)
                    return 0.0
            return max(float(oldest_left), 1e-6)

        return await self.db.call(acquire)
