"""Where the PostgreSQL peers' `stamp` task leaves its value: Procrastinate and PgQueuer store
no return value, so the task writes it to a `bench_stamps` row (after taking its start time,
so the write is not in the figure) and the adapter reads it back.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import asyncpg

__all__ = ["create", "read", "record"]

_pools: dict[asyncio.AbstractEventLoop, asyncio.Future[Any]] = {}


async def _pool() -> Any:
    loop = asyncio.get_running_loop()
    if loop not in _pools:
        _pools[loop] = asyncio.ensure_future(
            asyncpg.create_pool(os.environ["BENCH_SERVER_URL"], min_size=1, max_size=4)
        )
    return await asyncio.shield(_pools[loop])


async def create() -> None:
    """Create the table (the driver does, before the worker starts)."""
    pool = await _pool()
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_stamps (key text PRIMARY KEY, value float8 NOT NULL)"
    )


async def record(key: str, value: float) -> None:
    """Store the value of the task `key`."""
    pool = await _pool()
    await pool.execute(
        "INSERT INTO bench_stamps VALUES ($1, $2) ON CONFLICT DO NOTHING", key, value
    )


async def read(keys: Sequence[str]) -> dict[str, float]:
    """The stored values of these tasks."""
    pool = await _pool()
    rows = await pool.fetch("SELECT key, value FROM bench_stamps WHERE key = ANY($1)", list(keys))
    return {row["key"]: row["value"] for row in rows}
