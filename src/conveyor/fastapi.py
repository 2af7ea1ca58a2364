"""FastAPI integration: a lifespan that starts and stops the broker with the app.

    from fastapi import FastAPI
    import conveyor.fastapi, conveyor.web

    app = FastAPI(lifespan=conveyor.fastapi.lifespan(broker))
    app.include_router(conveyor.web.router(broker), prefix="/conveyor")

`lifespan(broker, worker=True)` also runs a worker inside the app's process, so a small service
is one command (`uvicorn main:app`); bigger ones run `conveyor worker` apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from conveyor.broker import Broker

__all__ = ["lifespan"]


def lifespan(
    broker: Broker, *, worker: bool = False, **worker_options: Any
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI/Starlette `lifespan` that starts `broker` with the app and shuts it down after.

    Args:
        broker: the application's broker.
        worker: also run a worker in the app's event loop (drained when the app stops).
        **worker_options: the worker's options (`queues`, `max_async_tasks`, ...).
    """

    @contextlib.asynccontextmanager
    async def manage(_: Any) -> AsyncIterator[None]:
        await broker.startup()
        try:
            if worker:
                async with _worker(broker, worker_options):
                    yield
            else:
                yield
        finally:
            await broker.shutdown()

    return manage


@contextlib.asynccontextmanager
async def _worker(broker: Broker, options: dict[str, Any]) -> AsyncIterator[None]:
    from conveyor.worker.consumer import Worker  # only apps that run tasks load the worker
    from conveyor.worker.run import worker_options

    stop = asyncio.Event()
    running = Worker(broker, worker_options(**options))
    task = asyncio.create_task(running.run(stop, manage_broker=False), name="conveyor-app-worker")
    try:
        yield
    finally:
        stop.set()
        await task
