"""The pytest plugin's fixtures (entry point `conveyor`), as a user's test suite sees them."""

from __future__ import annotations

from conveyor import SqliteBroker, TaskStatus
from conveyor.worker.consumer import Worker


async def test_fixtures_give_a_broker_and_a_running_worker(
    conveyor_broker: SqliteBroker, conveyor_worker: Worker
) -> None:
    @conveyor_broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    result = await (await add.kiq(1, 2)).wait_result(timeout=10)
    assert result.status is TaskStatus.SUCCEEDED
    assert result.return_value == 3
    assert conveyor_worker.broker is conveyor_broker
