"""Inside a task: the `Context`, dependencies, progress reports, generator tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from conveyor import Context, Depends, InMemoryBroker

broker = InMemoryBroker()
closed: list[str] = []


# --8<-- [start:depends]
def database() -> Iterator[dict[str, int]]:
    connection = {"rows": 42}  # e.g. a connection from a pool
    yield connection
    closed.append("database")  # runs after the task, also when it fails


@broker.task
async def count_rows(table: str, db: dict[str, int] = Depends(database)) -> int:
    return db["rows"]


# --8<-- [end:depends]
# --8<-- [start:context]
@broker.task
async def import_file(name: str, context: Context = Depends()) -> str:
    for done in range(1, 4):
        await context.set_progress({"file": name, "done": done, "total": 3})
    return f"{name}: attempt {context.attempt}, task id {context.task_id}"


# --8<-- [end:context]
# --8<-- [start:generator]
@broker.task
async def countdown(n: int) -> AsyncIterator[int]:
    for i in range(n, 0, -1):
        yield i  # each item reaches handle.stream() as it is produced


# --8<-- [end:generator]
async def main() -> None:
    assert await (await count_rows.kiq("users")).wait_result(timeout=5) is not None
    assert closed == ["database"]

    imported = await import_file.kiq("users.csv")
    print((await imported.wait_result(timeout=5)).return_value)
    assert await imported.get_progress() == {"file": "users.csv", "done": 3, "total": 3}

    # --8<-- [start:stream]
    handle = await countdown.kiq(3)
    items = [item async for item in handle.stream()]
    assert items == [3, 2, 1]
    assert (await handle.wait_result(timeout=5)).return_value == [3, 2, 1]  # the list
    # --8<-- [end:stream]
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
