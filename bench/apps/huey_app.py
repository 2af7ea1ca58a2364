"""Huey's benchmark tasks on `RedisHuey`, or on `SqliteHuey` when `BENCH_HUEY_SQLITE` names a
file (results stored, Huey's default, in either)."""

from __future__ import annotations

import os
import time

from huey import Huey, RedisHuey, SqliteHuey

SQLITE_FILE = os.environ.get("BENCH_HUEY_SQLITE")

huey: Huey = (
    SqliteHuey("bench", filename=SQLITE_FILE)
    if SQLITE_FILE
    else RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])
)


@huey.task()
def noop() -> bool:
    """Do nothing (Huey stores no result for None, so every library's no-op returns True)."""
    return True


@huey.task()
def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent
