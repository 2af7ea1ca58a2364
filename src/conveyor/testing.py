"""Helpers for users' tests: a real worker inside the test's event loop, on any broker, and
one in a thread of its own for synchronous tests (Celery's `start_worker`).

    async with conveyor.testing.worker(broker):
        handle = await add.kiq(1, 2)
        assert (await handle.wait_result(timeout=5)).return_value == 3

    with conveyor.testing.start_worker(broker):
        assert add.kiq_sync(1, 2).wait_result(timeout=5).return_value == 3
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from conveyor.broker import Broker
from conveyor.worker.consumer import Worker
from conveyor.worker.run import worker_options

__all__ = ["start_worker", "worker"]


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


@contextlib.contextmanager
def start_worker(broker: Broker, *, timeout: float = 10.0, **options: Any) -> Iterator[Worker]:
    """Run a worker for `broker` in a thread of its own for the duration of the block, for
    synchronous tests (send with `kiq_sync`); it drains before the block exits.

    Options are the worker's, as for `worker`.

    Raises:
        TimeoutError: the worker did not start within `timeout` seconds.
    """
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["stop"], state["loop"] = asyncio.Event(), asyncio.get_running_loop()
        try:
            async with worker(broker, **options) as running:
                state["worker"] = running
                started.set()
                await state["stop"].wait()
        finally:
            await broker.shutdown()  # its connections belong to this thread's loop
            started.set()

    thread = threading.Thread(
        target=lambda: state.update(error=_run(main)), name="conveyor-test-worker", daemon=True
    )
    thread.start()
    if not started.wait(timeout) or "worker" not in state:
        raise TimeoutError(f"the worker did not start within {timeout} s: {state.get('error')}")
    try:
        yield state["worker"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join()
    if state.get("error") is not None:
        raise state["error"]


def _run(main: Any) -> BaseException | None:
    try:
        asyncio.run(main())
    except BaseException as exc:  # handed to the test's thread
        return exc
    return None
