"""No commit of the SQLite engine runs a checkpoint: SQLite's automatic one is off, and the
checkpointer's thread keeps the WAL bounded even under a writer that never pauses."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conveyor.engines.sqlite.checkpoint import Checkpointer
from conveyor.engines.sqlite.db import SqliteDb, immediate

pytestmark = pytest.mark.timeout(60)

ROW = b"w" * (64 << 10)
#: Written back to back at most, in rows of 64 KiB: without the checkpointer the WAL would
#: hold all of it.
AT_MOST = 256 << 20


def _write(conn: sqlite3.Connection) -> int:
    """Commit one row; return the WAL file's size."""
    with immediate(conn):
        conn.execute("INSERT INTO kv (key, value) VALUES (hex(randomblob(8)), ?)", (ROW,))
    return os.path.getsize(f"{conn.execute('PRAGMA database_list').fetchone()[2]}-wal")


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conveyor-sqlite-checkpoint"]


async def test_commits_never_checkpoint_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    before = len(_checkpointers())  # another test's database left open has its own
    db = SqliteDb(str(path))
    await db.open("test")
    try:
        pragma = await db.run(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone())
        assert pragma[0] == 0
        assert len(_checkpointers()) == before + 1
        # The WAL restarts on the way, and is cut back to `journal_size_limit` when it does.
        largest = size = 0
        for _ in range(AT_MOST // len(ROW)):
            size = await db.run(_write)
            if size < largest:
                break
            largest = size
        assert size < largest, f"the WAL grew to {largest} bytes and never restarted"
    finally:
        await db.close("test")
    assert len(_checkpointers()) == before, "close stops the checkpointer's thread"


async def test_a_memory_database_has_no_checkpointer() -> None:
    before = len(_checkpointers())
    db = SqliteDb(":memory:")
    await db.open("test")
    try:
        assert await db.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "memory"
        assert len(_checkpointers()) == before
    finally:
        await db.close("test")


async def test_the_checkpointer_never_makes_a_deleted_file_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="conveyor.engines.sqlite.checkpoint")
    path = tmp_path / "gone.sqlite"
    checkpointer = Checkpointer(str(path))  # its file is gone before its first checkpoint
    try:
        checkpointer.wrote()
        deadline = time.monotonic() + 5.0
        while not any("checkpoint failed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no checkpoint was tried"
            await asyncio.sleep(0.01)
    finally:
        checkpointer.stop()
    assert not path.exists()
