"""conveyor's benchmark tasks; the engine is the URL in `BENCH_CONVEYOR_URL`. Results are
always stored; with `BENCH_RECORDER_URL` set the tasks also end with a `bench.recorder` write
(the `-recorded` rows, counted as the peers that store nothing are)."""

from __future__ import annotations

import asyncio
import os
import time

from bench import recorder
from conveyor import broker_from_url

broker = broker_from_url(os.environ["BENCH_CONVEYOR_URL"])
RECORD = recorder.enabled()


@broker.task
async def noop() -> bool:
    """Do nothing."""
    if RECORD:
        recorder.record()
    return True


@broker.task
async def sleepy() -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    if RECORD:
        recorder.record()
    return True


@broker.task
async def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    delay = time.time() - sent
    if RECORD:
        recorder.record(delay)
    return delay
