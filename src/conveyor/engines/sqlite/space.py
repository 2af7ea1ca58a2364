"""Giving space back: what the sweeper does after deleting expired rows, never per task.

Freed pages stay in a SQLite file and the WAL keeps the size of its longest run unless told
otherwise; `give_back` tells it, at most once per sweep interval of a process:

- Reclaim: a file in incremental auto-vacuum mode (every file this version creates) returns its
  free pages in steps of `STEP_PAGES`, each step one short write transaction, with a pause
  between steps so other processes get the write lock; a sweep stops after `BUDGET_SECONDS`
  and the next one goes on.
- Convert: a file made before (auto-vacuum off, any schema version) is rewritten once by
  `VACUUM` with incremental auto-vacuum on. VACUUM holds the write lock for the whole rewrite,
  about 10 ms per MiB of live data (measured: 11 MiB in 114 ms, 25 MiB in 281 ms), so it waits
  for a sweep that finds at most `CONVERT_MAX_LIVE_BYTES` live. VACUUM keeps the rowids of a
  table with an index (it renumbers only tables without one): `messages` and `dead_letters`
  have their primary key, so delivery receipts and dead-letter refs stay valid.
- Truncate: the WAL is left to the database's `Checkpointer` (`checkpoint`), asked to copy it
  back and truncate it to zero on its own thread and connection: it waits at most
  `checkpoint.RESTART_WAIT_MS` for readers, and when it cannot finish, the next sweep asks
  again. The database thread never waits for a checkpoint.

A failure here is logged, never raised: the file is only bigger than it needs to be.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import BrokerError

if TYPE_CHECKING:  # `db` calls `give_back`
    from conveyor.engines.sqlite.db import SqliteDb

__all__ = ["Usage", "give_back", "usage"]

log = logging.getLogger(__name__)

#: Pages one incremental-vacuum step frees: 2 MiB of 4 KiB pages, 5-17 ms of write lock.
STEP_PAGES = 512
#: The pause between two steps, in which other processes take the write lock.
PAUSE_SECONDS = 0.02
#: How long one sweep goes on reclaiming; what is left waits for the next sweep.
BUDGET_SECONDS = 1.0
#: Free space below which a sweep leaves the free pages alone.
RECLAIM_MIN_BYTES = 1 << 20
#: The largest live part of an old file that a sweep rewrites to turn auto-vacuum on.
CONVERT_MAX_LIVE_BYTES = 32 << 20

_NONE, _INCREMENTAL = 0, 2  # values of PRAGMA auto_vacuum


@dataclass(frozen=True)
class Usage:
    """How a file's pages are used: its size, free pages and auto-vacuum mode."""

    page_size: int
    pages: int
    free: int
    auto_vacuum: int


def usage(conn: sqlite3.Connection) -> Usage:
    """Read the page counts and the auto-vacuum mode of the main database."""
    names = ("page_size", "page_count", "freelist_count", "auto_vacuum")
    return Usage(*(int(conn.execute(f"PRAGMA {name}").fetchone()[0]) for name in names))


def _convert(conn: sqlite3.Connection) -> float:
    start = time.perf_counter()
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")
    return time.perf_counter() - start


def _step(conn: sqlite3.Connection) -> tuple[float, int]:
    # `execute` steps a pragma once, which frees one page: a script runs it to the end.
    start = time.perf_counter()
    conn.executescript(f"PRAGMA incremental_vacuum({STEP_PAGES})")
    took = time.perf_counter() - start
    return took, int(conn.execute("PRAGMA freelist_count").fetchone()[0])


async def _reclaim(db: SqliteDb, use: Usage) -> None:
    steps = -(-use.free // STEP_PAGES)  # at most what is free now, not what frees meanwhile
    deadline = time.monotonic() + BUDGET_SECONDS
    free, longest, done = use.free, 0.0, 0
    while done < steps and free and time.monotonic() < deadline:
        if done:
            await asyncio.sleep(PAUSE_SECONDS)
        took, free = await db.run(_step)
        longest, done = max(longest, took), done + 1
    log.debug(
        "%s: %d of %d free pages given back in %d steps, the longest %.1f ms",
        db.safe_url,
        use.free - free,
        use.free,
        done,
        longest * 1000,
    )


async def give_back(db: SqliteDb) -> None:
    """Return free pages to the file system in short steps, then have the WAL truncated."""
    try:
        use = await db.run(usage)
        live_bytes = (use.pages - use.free) * use.page_size
        if use.auto_vacuum == _NONE and live_bytes <= CONVERT_MAX_LIVE_BYTES:
            took = await db.run(_convert)
            log.debug("%s: rewritten with auto-vacuum in %.1f ms", db.safe_url, took * 1000)
        elif use.auto_vacuum == _INCREMENTAL and use.free * use.page_size >= RECLAIM_MIN_BYTES:
            await _reclaim(db, use)
        db.truncate_wal()
    except BrokerError as exc:
        log.warning("%s: could not give space back: %s", db.safe_url, exc)
