"""The PostgreSQL engine: one schema per test, dropped afterwards; a foreign writer with access
to the database can insert any row its column types allow."""

from __future__ import annotations

from pathlib import Path

from conveyor.engines.base import Engine
from tests.contract.cases import EngineCase, test_prefix
from tests.servers import drop_postgres_schema, postgres_url


def schema(tmp_path: Path) -> str:
    """The schema of the test that owns `tmp_path`."""
    return test_prefix(tmp_path, "postgres").replace("-", "_")


def _url(tmp_path: Path) -> str:
    return f"{postgres_url()}?schema={schema(tmp_path)}"


async def _cleanup(tmp_path: Path) -> None:
    if (tmp_path / "postgres-prefix").exists():
        await drop_postgres_schema(postgres_url(), schema(tmp_path))


async def _plant(engine: Engine, tmp_path: Path, queue: str) -> str:
    """A row without a task id (the empty string the NOT NULL column allows)."""
    import asyncpg

    conn = await asyncpg.connect(postgres_url())
    try:
        await conn.execute(
            f'INSERT INTO "{schema(tmp_path)}".messages (task_id, queue, body, available_at)'
            " VALUES ('', $1, 'foreign', 0)",
            queue,
        )
    finally:
        await conn.close()
    return "task id"


CASE = EngineCase("postgres", _url, cleanup=_cleanup, plant=_plant)
