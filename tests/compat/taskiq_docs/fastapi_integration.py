"""taskiq-fastapi's README example with an in-memory broker: a dependency shared by a FastAPI
handler and a task through `Request`; only the imports differ (and the Redis pool is a dict)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends as FastAPIDepends
from fastapi import FastAPI, Request
from pydantic import BaseModel

from conveyor.compat import taskiq_fastapi
from conveyor.compat.taskiq import InMemoryBroker, TaskiqDepends

broker = InMemoryBroker()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if not broker.is_worker_process:
        await broker.startup()
    app.state.redis_pool = {}
    yield
    if not broker.is_worker_process:
        await broker.shutdown()


app = FastAPI(lifespan=lifespan)

taskiq_fastapi.init(broker, "fastapi_integration:app")


def get_redis_pool(request: Request = TaskiqDepends()) -> dict[str, Any]:
    pool: dict[str, Any] = request.app.state.redis_pool
    return pool


@broker.task
async def my_redis_task(
    key: str, val: str, pool: dict[str, Any] = TaskiqDepends(get_redis_pool)
) -> None:
    pool[key] = val


class MyVal(BaseModel):
    key: str
    val: str


@app.post("/val")
async def setval_endpoint(val: MyVal) -> None:
    task = await my_redis_task.kiq(key=val.key, val=val.val)
    await task.wait_result(timeout=5)


@app.get("/val")
async def getval_endpoint(
    key: str, pool: dict[str, Any] = FastAPIDepends(get_redis_pool)
) -> Any:
    return pool.get(key)
