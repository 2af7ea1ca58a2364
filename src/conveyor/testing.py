"""Helpers for users' tests: a real worker inside the test's event loop (Celery's
`start_worker`), on any broker.

    async with conveyor.testing.worker(broker):
        handle = await add.kiq(1, 2)
        assert (await handle.wait_result(timeout=5)).return_value == 3
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from conveyor.broker import Broker
from conveyor.worker.consumer import Worker
from conveyor.worker.run import worker_options

__all__ = ["worker"]


@contextlib.asynccontextmanager
async def worker(broker: Broker, **options: Any) -> AsyncIterator[Worker]:
    """Run a worker for `broker` in this event loop for the duration of the block.

    Options are the worker's (`queues`, `max_async_tasks`, `max_threads`, ...). The broker is
    started if needed and left running; the worker drains before the block exits.
    """
    options.setdefault("receive_timeout", 0.1)
    options.setdefault("shutdown_timeout", 10.0)
    running = Worker(broker, worker_options(**options))
    stop = asyncio.Event()
    await broker.ensure_started()
    task = asyncio.create_task(running.run(stop, manage_broker=False), name="conveyor-test-worker")
    try:
        yield running
    finally:
        stop.set()
        await task
