"""The tasks `conveyor demo` runs: one of each kind a user meets on day one.

The broker comes from `CONVEYOR_BROKER_URL`, which the demo points at a temporary SQLite file.
"""

from __future__ import annotations

import asyncio
import time

from conveyor import Context, Depends, broker_from_url

broker = broker_from_url()


@broker.task("demo.add")
async def add(x: int, y: int) -> int:
    """An async task."""
    await asyncio.sleep(0.05)
    return x + y


@broker.task("demo.resize")
def resize(name: str, width: int) -> str:
    """A sync task: it runs in the worker's thread pool."""
    time.sleep(0.1)
    return f"{name} resized to {width}px"


@broker.task("demo.flaky", retries=3, retry_delay=0.2, retry_backoff=2.0)
async def flaky(key: str, context: Context = Depends()) -> str:
    """Fails on its first attempt, then succeeds on the automatic retry."""
    if context.attempt == 1:
        raise ConnectionError("upstream not ready")
    return f"{key} fetched on attempt {context.attempt}"


@broker.task("demo.remind")
async def remind(text: str) -> str:
    """Sent with a delay: it does not run before its time."""
    return f"reminder: {text} (ran at {time.strftime('%H:%M:%S')})"


@broker.task("demo.crunch")
async def crunch(steps: int, context: Context = Depends()) -> int:
    """Reports progress while it works."""
    total = 0
    for step in range(1, steps + 1):
        await asyncio.sleep(0.05)
        total += step
        await context.set_progress({"done": step, "total": steps})
    return total


@broker.task("demo.noop")
async def noop(n: int) -> int:
    """The throughput part: does nothing but return."""
    return n
