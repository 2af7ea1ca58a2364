"""conveyor's benchmark tasks; the engine is the URL in `BENCH_CONVEYOR_URL`."""

from __future__ import annotations

import asyncio
import os
import time

from conveyor import broker_from_url

broker = broker_from_url(os.environ["BENCH_CONVEYOR_URL"])


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
