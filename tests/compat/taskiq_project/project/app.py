"""The HTTP API: send tasks, read their results, add and remove schedules."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from project import tasks
from project.broker import broker, redis_source


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.store = {}
    if not broker.is_worker_process:
        await broker.startup()
    yield
    if not broker.is_worker_process:
        await broker.shutdown()


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    key: str
    value: int


class ScheduleRequest(BaseModel):
    name: str
    at: datetime


@app.post("/items")
async def create(item: Item) -> dict[str, str]:
    task = await tasks.save.kiq(item.key, item.value)
    return {"task_id": task.task_id}


@app.get("/results/{task_id}")
async def result(task_id: str) -> dict[str, Any]:
    found = await broker.get_handle(task_id).wait_result(timeout=10)
    return {"is_err": found.is_err, "value": found.return_value, "error": str(found.error)}


@app.get("/items/{key}")
async def read(key: str) -> Any:
    task = await tasks.read.kiq(key)
    return (await task.wait_result(timeout=10)).return_value


@app.post("/schedules")
async def schedule(request: ScheduleRequest) -> dict[str, str]:
    created = await tasks.tick.schedule_by_time(redis_source, request.at, request.name)
    return {"schedule_id": created.schedule_id}


@app.delete("/schedules/{schedule_id}")
async def unschedule(schedule_id: str) -> None:
    try:
        await redis_source.delete_schedule(schedule_id)
    except LookupError:
        raise HTTPException(404) from None
