"""Taskiq's getting-started and kicker examples; only the imports differ from Taskiq's docs."""

import asyncio

from conveyor.compat.taskiq import InMemoryBroker

broker = InMemoryBroker()
second_broker = InMemoryBroker()


@broker.task
async def add_one(value: int) -> int:
    return value + 1


@broker.task(task_name="custom_name", my_label=1, label2="something")
async def labelled() -> None:
    await asyncio.sleep(0)


async def main() -> None:
    await broker.startup()
    task = await add_one.kiq(1)
    result = await task.wait_result(timeout=2)
    print(f"Task execution took: {result.execution_time} seconds.")
    if not result.is_err:
        print(f"Returned value: {result.return_value}")
    else:
        print("Error found while executing task.")
    print(labelled.task_name, labelled.labels)
    other = await add_one.kicker().with_labels(label="x").with_broker(second_broker).kiq(41)
    print("second broker:", (await other.wait_result(timeout=2)).return_value)
    await broker.shutdown()
    await second_broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
