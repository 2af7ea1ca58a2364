"""The pytest plugin's fixtures (entry point `conveyor`), as a user's test suite sees them."""

from __future__ import annotations

from importlib.metadata import entry_points

import conveyor.pytest_plugin
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


def test_the_plugin_is_registered_as_an_entry_point() -> None:
    [plugin] = [ep for ep in entry_points(group="pytest11") if ep.name == "conveyor"]
    assert plugin.value == "conveyor.pytest_plugin"
    assert plugin.load() is conveyor.pytest_plugin
