"""The SQLite engine: one file per test; a foreign writer can put any type in any column."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from conveyor.engines.base import Engine
from tests.contract.cases import EngineCase


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/conveyor.db"


async def _plant(engine: Engine, tmp_path: Path, queue: str) -> str:
    """A row whose body is TEXT, as a hand-written INSERT makes it."""
    with closing(sqlite3.connect(tmp_path / "conveyor.db")) as conn:
        conn.execute(
            "INSERT INTO messages (task_id, queue, priority, body, available_at, owner,"
            " deliveries, enqueued_at) VALUES ('planted', ?, 0, 'not a blob', ?, NULL, 0, ?)",
            (queue, time.time(), time.time()),
        )
        conn.commit()
    return "str"


# Sweeps, and the space given back after each, every 20 ms instead of every minute: the suites
# run with that housekeeping (checkpoints, vacuum steps) between their operations.
CASE = EngineCase("sqlite", _url, {"poll_interval": 0.01, "sweep_interval": 0.02}, plant=_plant)
