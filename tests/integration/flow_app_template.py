"""The tasks of the scheduler and workflow process tests.

Copied into the test's `tmp_path` under a unique module name (see `use_flow_app` in the tests):
the test imports it as the producer; `conveyor scheduler` and `conveyor worker` processes load
it. Every run leaves a line in `marks/<name>.txt` with its task id and process, so a test sees
what ran where, even in a process it killed.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from conveyor import Context, Depends, Middleware, TaskMessage, broker_from_url

MARKS = Path(__file__).resolve().parent / "marks"

broker = broker_from_url()


class HoldSends(Middleware):
    """In a scheduler started with `FLOW_HOLD_SEND_AFTER=n`: after n runs of `every_second`,
    the next one is claimed and then held before it is sent, for ever (the test SIGKILLs the
    process there, between its claim and its send)."""

    def __init__(self, after: int) -> None:
        self.after = after

    async def pre_send(self, message: TaskMessage) -> TaskMessage:
        if message.task_name.endswith(":every_second"):
            self.after -= 1
            if self.after < 0:
                mark("held", message.task_id, os.getpid())
                await asyncio.Event().wait()
        return message


if os.environ.get("FLOW_HOLD_SEND_AFTER"):
    broker.add_middlewares([HoldSends(int(os.environ["FLOW_HOLD_SEND_AFTER"]))])


def mark(name: str, *fields: object) -> None:
    """Append one line to `marks/<name>.txt`; one small O_APPEND write never interleaves."""
    MARKS.mkdir(exist_ok=True)
    line = " ".join(str(field) for field in fields) + "\n"
    fd = os.open(MARKS / f"{name}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def marks(name: str) -> list[list[str]]:
    """The lines of `marks/<name>.txt`, split into fields."""
    path = MARKS / f"{name}.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# -- schedules -----------------------------------------------------------------------------


@broker.task(schedule=[{"interval": 1}])
async def every_second(context: Context = Depends()) -> str:
    mark("every_second", context.message.task_id, os.getpid(), time.time())
    return context.message.task_id


@broker.task
async def stored(tag: str, context: Context = Depends()) -> str:
    mark("stored", context.message.task_id, tag, time.time())
    return tag


# -- workflows -------------------------------------------------------------------------------


@broker.task
async def slow_add(x: int, y: int, context: Context = Depends()) -> int:
    """x + y after a pause, marking start and end: the crash tests kill a worker in between."""
    mark("started", context.message.task_id, os.getpid(), time.time())
    await asyncio.sleep(0.4)
    mark("done", context.message.task_id, os.getpid())
    return x + y


@broker.task
async def total(values: list[int], context: Context = Depends()) -> int:
    mark("total", context.message.task_id, os.getpid())
    return sum(values)


@broker.task
async def fail(value: int) -> int:
    raise ValueError(f"cannot use {value}")
