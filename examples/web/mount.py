"""The HTTP API and dashboard inside your own FastAPI app, checked with an in-process client."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

import conveyor.fastapi
import conveyor.web
from conveyor import SqliteBroker

broker = SqliteBroker("web-example.db")


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


# --8<-- [start:mount]
# The broker starts and stops with the app; worker=True also runs tasks in this process.
app = FastAPI(lifespan=conveyor.fastapi.lifespan(broker, worker=True))
app.include_router(conveyor.web.router(broker, token=None), prefix="/conveyor")
# What `conveyor web` serves, as an app of its own:
standalone = conveyor.web.create_app(broker, token=None, max_body=16 << 20)


# --8<-- [end:mount]
async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        sent = await client.post("/conveyor/tasks/mount:add", json={"args": [1, 2]})
        assert sent.status_code == 202, sent.text
        task_id = sent.json()["task_id"]
        done = await client.get(f"/conveyor/tasks/result/{task_id}", params={"timeout": 10})
        assert done.json()["return_value"] == 3
        bad = await client.post("/conveyor/tasks/mount:add", json={"args": [1]})
        print(bad.status_code, bad.json()["detail"])  # 422: arguments that do not fit


if __name__ == "__main__":
    asyncio.run(main())
