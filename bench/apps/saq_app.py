"""saq's benchmark tasks and worker `settings` (`saq bench.apps.saq_app.settings`), on the
harness's Redis or PostgreSQL (`Queue.from_url` picks `RedisQueue` or `PostgresQueue`)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from saq import Queue

URL = os.environ["BENCH_SERVER_URL"]

queue = Queue.from_url(URL)


async def noop(ctx: dict[str, Any]) -> bool:
    """Do nothing."""
    return True


async def sleepy(ctx: dict[str, Any]) -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    return True


async def stamp(ctx: dict[str, Any], *, sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, sleepy, stamp],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
}
