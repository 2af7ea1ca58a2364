"""Taskiq's "Testing with taskiq" setup: the broker module swaps its broker for an in-memory one
under pytest, and a task with a dependency the tests replace; only the imports differ from
Taskiq's docs."""

import os
from pathlib import Path
from typing import Annotated

from conveyor.compat.taskiq import AsyncBroker, InMemoryBroker, TaskiqDepends, ZeroMQBroker

env = os.environ.get("ENVIRONMENT")

broker: AsyncBroker = ZeroMQBroker()

if env and env == "pytest":
    broker = InMemoryBroker()


@broker.task
async def parse_int(val: str) -> int:
    return int(val)


@broker.task
async def parse_and_add_one(val: str) -> int:
    task = await parse_int.kiq(val)
    result = await task.wait_result()
    return result.return_value + 1


@broker.task
async def modify_path(some_path: Annotated[Path, TaskiqDepends()]) -> str:
    return str(some_path.absolute() / "somedir")
