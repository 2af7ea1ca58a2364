"""Three levels of testing tasks: the function, a real worker in the test, the plugin's fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from app import add, broker, parse_int

import conveyor.testing
from conveyor import InMemoryBroker, SqliteBroker, TaskStatus
from conveyor.worker.consumer import Worker


# --8<-- [start:function]
async def test_the_function_itself() -> None:
    assert await add(1, 2) == 3  # a task called directly is the plain function


async def test_in_place() -> None:
    inplace = InMemoryBroker(await_inplace=True)  # kiq runs the task before it returns

    @inplace.task
    async def double(x: int) -> int:
        return 2 * x

    result = await (await double.kiq(21)).get_result()  # already there
    assert result is not None
    assert result.return_value == 42
    await inplace.shutdown()


# --8<-- [end:function]
# --8<-- [start:worker]
@pytest.fixture
async def worker() -> AsyncIterator[None]:
    """The app's broker with a real worker in the test's event loop (Celery's start_worker)."""
    async with broker, conveyor.testing.worker(broker, queues=["default"]):
        yield


@pytest.mark.usefixtures("worker")
async def test_through_a_worker() -> None:
    result = await (await add.kiq(1, 2)).wait_result(timeout=5)
    assert result.return_value == 3


@pytest.mark.usefixtures("worker")
async def test_a_failure_is_retried_then_recorded() -> None:
    handle = await parse_int.kiq("forty-two")
    await broker.wait_all(timeout=5)  # until nothing is queued, scheduled or running
    result = await handle.wait_result(timeout=5)
    assert result.status is TaskStatus.FAILED
    assert (result.error_type, result.attempts) == ("ValueError", 3)


# --8<-- [end:worker]
# --8<-- [start:plugin]
async def test_with_the_plugin(conveyor_broker: SqliteBroker, conveyor_worker: Worker) -> None:
    @conveyor_broker.task  # a fresh SQLite broker per test, with a worker running
    async def shout(text: str) -> str:
        return text.upper()

    result = await (await shout.kiq("hi")).wait_result(timeout=5)
    assert result.return_value == "HI"


# --8<-- [end:plugin]
