"""An `InMemoryBroker` made at import serves every event loop that uses it in turn (pytest gives
each async test its own), and `kicker().with_broker(other)` runs the task on the other broker."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import InMemoryBroker

broker = InMemoryBroker()


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task
def mul(x: int, y: int) -> int:
    return x * y


async def _round_trip(n: int) -> tuple[int, int]:
    added = await (await add.kiq(n, 1)).wait_result(timeout=5)
    multiplied = await (await mul.kiq(n, 2)).wait_result(timeout=5)
    return added.return_value, multiplied.return_value


def test_a_module_level_broker_in_one_loop_after_another() -> None:
    assert [asyncio.run(_round_trip(n)) for n in range(3)] == [(1, 0), (2, 2), (3, 4)]


@pytest.mark.parametrize("n", [1, 2, 3])
async def test_each_async_test_has_its_own_loop(n: int) -> None:
    assert await _round_trip(n) == (n + 1, n * 2)


def test_startup_and_shutdown_in_a_later_loop() -> None:
    async def run(n: int) -> int:
        await broker.startup()
        try:
            return (await (await add.kiq(n, n)).wait_result(timeout=5)).return_value
        finally:
            await broker.shutdown()

    assert [asyncio.run(run(n)) for n in (1, 2)] == [2, 4]


async def test_with_broker_runs_the_task_on_the_other_broker() -> None:
    second = InMemoryBroker()
    handle = await add.kicker().with_broker(second).kiq(20, 22)
    result = await handle.wait_result(timeout=5)
    await second.shutdown()
    assert result.return_value == 42
    assert second.find_task(add.name) is not None
    assert await broker.result_backend.get_result(handle.task_id) is None  # not on the first
