"""The SQLite file gives space back: after a drain and a result sweep, the main file and the WAL
shrink, whether the file is new or was made by an earlier version (auto-vacuum off)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.engines.base import Engine, Outgoing
from conveyor.engines.sqlite import SqliteResultBackend, SqliteTransport, open_engine, space
from conveyor.engines.sqlite.db import _SCHEMA

pytestmark = pytest.mark.timeout(60)

MESSAGES = 160
BODY = b"b" * (80 << 10)  # 160 x 80 KiB: 12.5 MiB of messages
RESULT = b"r" * (16 << 10)
RESULT_TTL = 0.3

# What version 1 made: its tables, before the migration to version 2 drops and adds some.
VERSION_1 = (
    "CREATE TABLE messages (task_id TEXT PRIMARY KEY, queue TEXT NOT NULL,"
    " priority INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL, available_at REAL NOT NULL,"
    " eta REAL, owner TEXT, deliveries INTEGER NOT NULL DEFAULT 0,"
    " retrying INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL);"
    "CREATE TABLE cancels (task_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);"
    "CREATE TABLE task_state (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);"
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);"
    "PRAGMA user_version = 1;"
)


@dataclass(frozen=True)
class Sizes:
    """How big the file is, on disk and in pages, and its WAL."""

    file: int
    pages: int
    free: int
    wal: int
    auto_vacuum: int


def _sizes(path: Path) -> Sizes:
    with closing(sqlite3.connect(path)) as conn:
        size, pages, free, auto_vacuum = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_size", "page_count", "freelist_count", "auto_vacuum")
        )
    wal = path.with_name(path.name + "-wal")
    return Sizes(
        path.stat().st_size,
        pages * size,
        free * size,
        wal.stat().st_size if wal.exists() else 0,
        auto_vacuum,
    )


def _made_before(version: int) -> Callable[[Path], None]:
    """A file made by an earlier conveyor: auto-vacuum off, WAL mode, tables of `version`."""

    def make(path: Path) -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            if version == 1:
                conn.executescript(VERSION_1)
                return
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("PRAGMA user_version = 2")

    return make


def _parts(engine: Engine) -> tuple[SqliteTransport, SqliteResultBackend]:
    assert isinstance(engine.transport, SqliteTransport)
    assert isinstance(engine.results, SqliteResultBackend)
    return engine.transport, engine.results


async def _drain(transport: SqliteTransport, results: SqliteResultBackend) -> None:
    """Run every message of `q` to a result that expires soon, as workers do."""
    while batch := await transport.receive(["q"], 20, 0.0):
        await asyncio.gather(
            *(transport.ack_with_result(d, results, RESULT, RESULT_TTL) for d in batch)
        )


async def _idle_until_small(worker: SqliteTransport, path: Path, peak: Sizes) -> Sizes:
    """Let an idle worker poll (and sweep) until the file is small again, or fail after 15 s."""
    deadline = time.monotonic() + 15.0
    while True:
        now = _sizes(path)
        small = (
            now.pages <= peak.pages // 10
            and now.file <= peak.pages // 10
            and now.free < 1 << 20
            and now.wal <= peak.wal // 10
        )
        if small:
            return now
        assert time.monotonic() < deadline, f"still {now} after the drain, at the peak {peak}"
        await worker.receive(["q"], 1, 0.05)


@pytest.mark.parametrize("made_by", ["this version", "version 2", "version 1"])
async def test_a_drained_file_gives_its_space_back(tmp_path: Path, made_by: str) -> None:
    path = tmp_path / "space.db"
    if made_by != "this version":
        _made_before(int(made_by[-1]))(path)
    # The producer never sweeps here: the idle worker below is what gives space back.
    transport, results = _parts(
        open_engine("sqlite://", path=str(path), lease_seconds=60.0, sweep_interval=3600.0)
    )
    worker, _ = _parts(open_engine("sqlite://", path=str(path), sweep_interval=0.05))
    await transport.startup()
    try:
        await transport.publish([Outgoing("held", "q", b"x")])
        [held] = await transport.receive(["q"], 1, 1.0)  # leased across the whole test
        with closing(sqlite3.connect(path)) as reader:
            # A reader's snapshot keeps the WAL from restarting, as a steady stream of readers
            # does under load: the WAL grows to the size of the run.
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM messages").fetchall()
            for start in range(0, MESSAGES, 20):
                await transport.publish(
                    [Outgoing(f"t{i}", "q", BODY) for i in range(start, start + 20)]
                )
            wal_peak = _sizes(path).wal
        await _drain(transport, results)
        peak = _sizes(path)
        peak = Sizes(peak.file, peak.pages, peak.free, wal_peak, peak.auto_vacuum)
        assert peak.pages >= 10 << 20
        assert peak.wal >= 10 << 20

        now = await _idle_until_small(worker, path, peak)

        assert now.auto_vacuum == 2  # incremental, from now on
        await transport.ack([held])  # its receipt still names its row
        assert await transport.locate("held") is None
        assert await results.get_result("t0") is None
    finally:
        await transport.shutdown()
        await results.shutdown()  # `get_result` opened the file for it too
        await worker.shutdown()


async def _until(done: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `done` until it holds, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what} not within {seconds} s"
        await asyncio.sleep(0.01)


async def test_a_reader_in_the_way_makes_the_wal_truncation_give_up_quickly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="conveyor.engines.sqlite.checkpoint")
    path = tmp_path / "reader.db"
    transport, _ = _parts(open_engine("sqlite://", path=str(path), busy_timeout=30.0))
    db = transport._db

    def gave_up() -> bool:
        return any("not truncated" in r.getMessage() for r in caplog.records)

    try:
        await transport.publish([Outgoing("t0", "q", BODY)])
        with closing(sqlite3.connect(path)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM messages").fetchall()
            await transport.publish([Outgoing("t1", "q", BODY)])  # after the reader's snapshot
            start = time.monotonic()
            await space.give_back(db)  # asks the checkpointer, on its own thread
            # Commits go on while the checkpointer waits for the reader: it gives up after a
            # short wait, not the 30 s busy timeout, and never makes the database thread wait.
            n = 0
            while not gave_up():
                assert time.monotonic() - start < 2.0, "the WAL truncation did not give up"
                commit = time.monotonic()
                await transport.publish([Outgoing(f"u{n}", "q", b"x")])
                assert time.monotonic() - commit < 1.0
                n += 1
            assert _sizes(path).wal > 0
        assert await db.run(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone()[0]) == 30000
        await space.give_back(db)
        await _until(lambda: _sizes(path).wal == 0, 10.0, "the WAL truncated once the reader left")
    finally:
        await transport.shutdown()
