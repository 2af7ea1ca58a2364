"""Getting started: two tasks, sent from this script to a worker started from the CLI.

conveyor worker main:broker     # terminal 1: a worker, until Ctrl-C
python main.py                  # terminal 2: send the tasks, print their results
"""

from __future__ import annotations

import asyncio

# --8<-- [start:tasks]
from conveyor import broker_from_url

broker = broker_from_url()  # CONVEYOR_BROKER_URL, else the SQLite file ./conveyor.db


@broker.task
async def add(x: int, y: int) -> int:
    """Runs in the worker: async functions run in its event loop."""
    return x + y


@broker.task(retries=2, retry_delay=0.1)
def divide(x: float, y: float) -> float:
    """Sync functions run in the worker's thread pool; this one fails for y == 0."""
    return x / y


# --8<-- [end:tasks]
async def main() -> None:
    handle = await add.kiq(1, 2)  # sent: the worker runs it
    result = await handle.wait_result(timeout=10)
    print(f"add(1, 2) = {result.return_value}, run by worker {result.worker}")

    failing = await divide.kiq(1, 0)
    failed = await failing.wait_result(timeout=10)
    print(f"divide(1, 0): {failed.status} after {failed.attempts} attempts")
    print(f"{failed.error_type}: {failed.error_message}")
    assert failed.is_err
    assert failed.attempts == 3


if __name__ == "__main__":
    asyncio.run(main())
