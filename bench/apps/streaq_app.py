"""streaq's benchmark tasks and `worker`.

`python -m bench.apps.streaq_app` runs the worker the way `streaq run bench.apps.streaq_app:worker`
does (`worker.run_sync()`), except that the CLI always logs two lines per task at INFO: this
entry point logs at WARNING, as every library in the benchmark does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from streaq import Worker

URL = os.environ["BENCH_REDIS_URL"]

worker = Worker(
    redis_url=URL,
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
    queue_name="bench",
)


@worker.task
async def noop() -> bool:
    """Do nothing."""
    return True


@worker.task
async def sleepy() -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    return True


@worker.task
async def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    worker.run_sync()
