"""Asking for a retry, and refusing a message for good, from inside a task."""

from __future__ import annotations

import asyncio

from conveyor import Context, Depends, InMemoryBroker, Reject, Retry, TaskStatus

broker = InMemoryBroker()


# --8<-- [start:retry]
@broker.task
async def charge(order_id: int, context: Context = Depends()) -> str:
    if context.attempt < 3:  # e.g. the payment provider answered 429
        raise Retry(delay=0.05, max_retries=5)  # run again in 50 ms, at most 5 retries
    return f"order {order_id} charged on attempt {context.attempt}"


@broker.task(retries=10)
async def import_row(row: dict[str, str]) -> None:
    if "id" not in row:
        raise Reject("row without an id")  # no retry: failed and dead-lettered at once


# --8<-- [end:retry]
async def main() -> None:
    result = await (await charge.kiq(42)).wait_result(timeout=5)
    assert result.return_value == "order 42 charged on attempt 3"

    rejected = await (await import_row.kiq({"name": "x"})).wait_result(timeout=5)
    assert rejected.status is TaskStatus.FAILED
    assert rejected.attempts == 1
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
