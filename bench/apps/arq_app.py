"""arq's benchmark tasks and `WorkerSettings` (`arq bench.apps.arq_app.WorkerSettings`)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, ClassVar

from arq.connections import RedisSettings

URL = os.environ["BENCH_REDIS_URL"]

#: For `arq --custom-log-dict`: arq's default logs a line per job at INFO; WARNING here, as
#: for every library in the benchmark.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


async def noop(ctx: dict[str, Any]) -> bool:
    """Do nothing."""
    return True


async def sleepy(ctx: dict[str, Any]) -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    return True


async def stamp(ctx: dict[str, Any], sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent


class WorkerSettings:
    """arq's worker configuration: results kept (arq's default, 1 h), `max_jobs` jobs at once."""

    functions: ClassVar[list[Any]] = [noop, sleepy, stamp]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "100"))
