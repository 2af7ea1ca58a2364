"""The dashboard's read routes beyond the snapshot: a task's page, a worker's page and the stored
history; and the loop that records the history while the web app runs, whether or not a
dashboard is open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Final

import msgspec
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from conveyor.broker import Broker
from conveyor.history import FIELDS, SERIES, History
from conveyor.inspector import Inspector
from conveyor.web.auth import Detail
from conveyor.web.detail import task_detail, worker_detail
from conveyor.web.overview import SharedOverview
from conveyor.web.state import WebState

__all__ = ["SAMPLE_SECONDS", "add_views", "sampling"]

log = logging.getLogger(__name__)

#: Seconds between two points the web app records (the finest series' step).
SAMPLE_SECONDS: Final = min(series.step for series in SERIES)
#: Seconds after a step's start at which it is sampled (clear of the step's edge).
_SAMPLE_OFFSET: Final = 0.5

_SERIES_NAME: Final = f"^({'|'.join(series.name for series in SERIES)})$"


def add_views(
    web: APIRouter, broker: Broker, inspector: Inspector, state: WebState, history: History
) -> None:
    """Add the task, worker and history routes to the dashboard's guarded router."""

    @web.get("/api/tasks/{task_id}", tags=["dashboard"], responses={404: {"model": Detail}})
    async def task_page(task_id: str) -> Any:
        """Everything still known of one task: its call, status and progress, its result or
        error, a row per attempt, its dead letter and its workflow."""
        found = await task_detail(broker, inspector, state, task_id)
        if found is None:
            return JSONResponse({"detail": f"nothing known of task {task_id!r}"}, 404)
        return found

    @web.get("/api/workers/{name}", tags=["dashboard"], responses={404: {"model": Detail}})
    async def worker_page(name: str) -> Any:
        """A worker's heartbeat (while it lives) and the tasks it ran lately."""
        found = await worker_detail(inspector, name)
        if found is None:
            return JSONResponse({"detail": f"no worker {name!r} is live or listed"}, 404)
        return found

    @web.get("/api/history", tags=["dashboard"])
    async def stored_history(
        series: Annotated[str, Query(pattern=_SERIES_NAME)] = SERIES[0].name,
    ) -> dict[str, Any]:
        """The stored points of a series, oldest first: cumulative task counters (rates are
        their differences), waiting messages, running tasks and live workers."""
        kept = history.series[series]
        points = await history.points(kept.name)
        return {
            "series": kept.name,
            "step": kept.step,
            "size": kept.size,
            "fields": list(FIELDS),
            "points": [list(msgspec.structs.astuple(point)) for point in points],
        }


def sampling(
    shared: SharedOverview,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that reads a snapshot (which records the history's point) at the start of
    every `SAMPLE_SECONDS` while the app runs."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(_sample(shared), name="conveyor-web-history")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


async def _sample(shared: SharedOverview) -> None:
    failing = False
    while True:
        try:
            await shared.get()
        except Exception as exc:  # the broker is away: say so once, keep trying
            if not failing:
                text = " ".join(f"{type(exc).__name__}: {exc}".split())
                log.warning("dashboard history: cannot read the broker: %s", text)
            failing = True
        else:
            if failing:
                log.info("dashboard history: recording again")
            failing = False
        await asyncio.sleep(SAMPLE_SECONDS - time.time() % SAMPLE_SECONDS + _SAMPLE_OFFSET)
