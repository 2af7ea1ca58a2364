"""Huey's benchmark tasks on `RedisHuey` (results stored, Huey's default)."""

from __future__ import annotations

import os
import time

from huey import RedisHuey

URL = os.environ["BENCH_REDIS_URL"]

huey = RedisHuey("bench", url=URL)


@huey.task()
def noop() -> bool:
    """Do nothing (Huey stores no result for None, so every library's no-op returns True)."""
    return True


@huey.task()
def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent
