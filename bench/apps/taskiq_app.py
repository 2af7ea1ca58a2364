"""taskiq's benchmark tasks on taskiq-redis: `BENCH_TASKIQ_BROKER` is `list` or `stream`."""

from __future__ import annotations

import asyncio
import os
import time

from taskiq import AsyncBroker
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ["BENCH_REDIS_URL"]
KIND = os.environ.get("BENCH_TASKIQ_BROKER", "list")

results: RedisAsyncResultBackend[object] = RedisAsyncResultBackend(URL)
_base: AsyncBroker = ListQueueBroker(URL) if KIND == "list" else RedisStreamBroker(URL)
broker = _base.with_result_backend(results)


@broker.task
async def noop() -> bool:
    """Do nothing."""
    return True


@broker.task
async def sleepy() -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    return True


@broker.task
async def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent
