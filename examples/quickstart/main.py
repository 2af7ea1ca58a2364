"""The QTasks promise: `python main.py` runs a worker, no server and no setup.

python main.py          # a worker on ./conveyor.db, until Ctrl-C
python main.py send     # in another terminal: send a task and print its result
"""

from __future__ import annotations

import asyncio
import sys

from conveyor import broker_from_url

broker = broker_from_url()  # CONVEYOR_BROKER_URL, else sqlite:///conveyor.db


@broker.task
async def add(x: int, y: int) -> int:
    """Add two numbers, in the worker."""
    return x + y


async def send() -> None:
    """Send `add(1, 2)` and print what the worker returns."""
    handle = await add.kiq(1, 2)
    result = await handle.wait_result(timeout=30)
    print(result.return_value)


if __name__ == "__main__":
    if sys.argv[1:] == ["send"]:
        asyncio.run(send())
    else:
        broker.run(max_async_tasks=100)
