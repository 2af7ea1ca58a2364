"""The dead-letter queue: every task that failed for good, ready to be sent again after a fix."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker
from conveyor.inspector import Inspector

broker = InMemoryBroker()
fixed = False


@broker.task
async def sync_account(account: str) -> str:
    if not fixed:
        raise RuntimeError("API key expired")
    return f"{account} synced"


async def main() -> None:
    global fixed
    # --8<-- [start:dlq]
    handle = await sync_account.kiq("acme")
    assert (await handle.wait_result(timeout=5)).is_err

    inspector = Inspector(broker)  # what `conveyor dlq list` and the dashboard read
    [letter] = await inspector.dead_letters(limit=10)
    print(letter.task_id, inspector.describe(letter), letter.reason)

    fixed = True  # ...the API key is renewed
    assert await broker.requeue_dead([handle.task_id]) == 1  # `conveyor dlq requeue`
    await broker.wait_all(timeout=5)
    assert (await handle.wait_result(timeout=5)).return_value == "acme synced"
    # --8<-- [end:dlq]
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
