"""Handles and results: wait, read, status, errors, cancel, rebuild a handle from its id."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker, ResultTimeout, TaskError, TaskStatus

broker = InMemoryBroker()


@broker.task
async def slow_square(x: int) -> int:
    await asyncio.sleep(0.2)
    return x * x


@broker.task
async def fails() -> None:
    raise ValueError("no such user")


@broker.task(store_result=False)
async def fire_and_forget() -> None: ...


async def main() -> None:
    # --8<-- [start:wait]
    handle = await slow_square.kiq(4)
    assert await handle.get_result() is None  # not finished yet: no waiting
    assert await handle.status() in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    try:
        await handle.wait_result(timeout=0.01)
    except ResultTimeout:
        print("not done within 10 ms")
    result = await handle.wait_result(timeout=5)
    assert result.status is TaskStatus.SUCCEEDED
    assert result.return_value == 16
    print(result.task_name, result.attempts, result.worker, f"{result.execution_time:.2f} s")
    # --8<-- [end:wait]

    # --8<-- [start:errors]
    failed = await (await fails.kiq()).wait_result(timeout=5)  # a failure is a result too
    assert failed.is_err
    assert failed.status is TaskStatus.FAILED
    assert (failed.error_type, failed.error_message) == ("ValueError", "no such user")
    assert failed.error_traceback is not None  # the worker's traceback
    assert isinstance(failed.error, ValueError)  # the task's own class, and a TaskError too
    try:
        failed.raise_for_error()  # a class this process lacks comes back as a plain TaskError
    except TaskError as exc:
        print(f"failed: {exc}")
    # --8<-- [end:errors]

    # --8<-- [start:cancel]
    later = await slow_square.kicker().with_delay(60).kiq(5)
    assert await later.status() is TaskStatus.SCHEDULED
    assert await later.cancel()  # True: removed before it ran
    assert (await later.wait_result(timeout=5)).status is TaskStatus.CANCELLED

    same = broker.get_handle(handle.task_id)  # e.g. in a status page, from an id
    assert (await same.wait_result(timeout=5)).return_value == 16
    # --8<-- [end:cancel]

    quiet = await fire_and_forget.kiq()
    await broker.wait_all(timeout=5)
    assert await quiet.get_result() is None  # store_result=False keeps none
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
