# The seed README's labels example (both forms); only the imports were added.
import asyncio

from conveyor import InMemoryBroker

broker = InMemoryBroker()


@broker.task(my_label=1, label2="something")
async def my_async_task() -> None:
    """My lovely task."""
    await asyncio.sleep(1)
    print("Hello")

async def main():
    await my_async_task.kiq()


@broker.task
async def my_other_task() -> None:
    """My lovely task."""
    await asyncio.sleep(1)
    print("Hello")

async def main2():
    await my_other_task.kicker().with_labels(
        my_label=1,
        label2="something",
    ).kiq()


asyncio.run(main())
asyncio.run(main2())
