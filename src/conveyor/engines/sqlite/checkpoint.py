"""Checkpoints off the commit path: the WAL is copied back on a thread of its own.

SQLite's automatic checkpoint runs inside whichever commit finds the WAL past 1,000 pages, and
its two syncs delay that send, claim or settle by milliseconds: it was the whole p99 tail of the
SQLite engine (bench/NOTES.md, 2026-12-07). So each `SqliteDb` turns it off
(`wal_autocheckpoint = 0`) and runs a `Checkpointer`; no checkpoint ever runs on its database
thread:

- It sleeps until its database thread reports a write, then waits `PERIOD` so the writes of a
  period share one checkpoint, and runs a PASSIVE one on its own connection: no lock is taken,
  commits go on meanwhile, and once it has caught up the next commit restarts the WAL.
- A writer that never pauses keeps the checkpoint from catching up, so the WAL would never
  restart: once it holds `RESTART_FRAMES`, a TRUNCATE checkpoint waits at most
  `RESTART_WAIT_MS` to finish the few frames the passive one left, restart the WAL and cut its
  file to zero bytes. The WAL stays bounded.
- The sweeper (`space`) asks for that truncation once per sweep (`truncate`) whatever the
  WAL holds, so an idle file gives its WAL back too; each one is logged at debug level.
- A TRUNCATE holds the write lock while it waits for readers: when one is in the way (it comes
  back busy), the next waits until the WAL has doubled or the next sweep asks, so a long reader
  never costs every period's commits that wait.
- A failure is logged at debug level and the next write or sweep tries again: the WAL is only
  longer meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

__all__ = ["PERIOD", "RESTART_FRAMES", "Checkpointer"]

log = logging.getLogger(__name__)

#: Seconds between two checkpoints of a process that keeps writing.
PERIOD = 0.1
#: WAL frames (pages) past which the checkpoint restarts the WAL itself: 8 MiB of 4 KiB pages.
RESTART_FRAMES = 2048
#: How long a TRUNCATE checkpoint waits for the write lock and for readers.
RESTART_WAIT_MS = 20


class Checkpointer:
    """Copies the WAL of one database file back, on its own thread and connection."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wrote = threading.Event()
        self._stopping = threading.Event()
        self._restart_at = RESTART_FRAMES
        self._thread = threading.Thread(
            target=self._run, name="conveyor-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def wrote(self) -> None:
        """Say that a transaction was committed: a checkpoint follows within a period."""
        self._wrote.set()

    def truncate(self) -> None:
        """Ask for the WAL to be restarted and truncated to zero bytes within a period."""
        self._restart_at = 1
        self._wrote.set()

    def stop(self) -> None:
        """Stop the thread after its current checkpoint, and close its connection."""
        self._stopping.set()
        self._wrote.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while self._wrote.wait() and not self._stopping.wait(PERIOD):
            self._wrote.clear()
            try:
                if conn is None:
                    # `mode=rw`: a file deleted meanwhile is never made again, empty, here.
                    uri = f"{Path(self._path).absolute().as_uri()}?mode=rw"
                    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
                    conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                if frames >= self._restart_at:
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    self._restart_at = 2 * frames if busy else RESTART_FRAMES
                    done = "not truncated (readers or a writer in the way)" if busy else "truncated"
                    log.debug("sqlite:///%s: WAL of %d frames %s", self._path, frames, done)
            except sqlite3.Error as exc:
                log.debug("sqlite:///%s: checkpoint failed: %s", self._path, exc)
                if conn is not None:  # a new connection at the next write
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
