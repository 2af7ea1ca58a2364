"""Bad input never stalls a worker, on every engine: an entry the engine cannot read, or a message
nested too deeply, is dead-lettered on its own with its reason and everything around it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

import conveyor.testing
from conveyor import SerializationError, TaskStatus
from conveyor.broker import Broker
from conveyor.brokers import Broker as AppBroker
from conveyor.engines.base import Engine, Outgoing
from conveyor.message import MAX_DEPTH

pytestmark = pytest.mark.timeout(60)


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _deep_body(broker: Broker, task_id: str, task_name: str, levels: int) -> bytes:
    """A message whose one argument is `levels` lists deep, encoded by hand: conveyor's own
    encoder refuses it, as it must."""
    plain = {"task_id": task_id, "task_name": task_name, "args": ["PLACEHOLDER"]}
    if broker.serializer.name == "json":
        body = msgspec.json.encode(plain).replace(
            b'"PLACEHOLDER"', b"[" * levels + b"0" + b"]" * levels
        )
    else:
        body = msgspec.msgpack.encode(plain).replace(b"\xabPLACEHOLDER", b"\x91" * levels + b"\x00")
    return broker.signer.sign(body)


async def test_a_message_nested_too_deeply_is_dead_lettered(running: Broker) -> None:
    @running.task
    async def takes(x: Any) -> str:
        return "ran"

    for levels, task_id in ((MAX_DEPTH + 5, "deep-1"), (5000, "deep-2")):
        body = _deep_body(running, task_id, takes.name, levels)
        await running.transport.publish([Outgoing(task_id, "default", body)])
        result = await running.get_handle(task_id).wait_result(timeout=10)
        assert result.status is TaskStatus.FAILED
        assert result.error_type == "SerializationError"
        assert "nested" in (result.error_message or "")
    letters = {d.task_id: d.reason for d in await running.transport.dead_letters()}
    assert "nested" in letters["deep-1"]
    assert "nested" in letters["deep-2"]
    assert (await (await takes.kiq(_deep(10))).wait_result(timeout=10)).return_value == "ran"


async def test_kiq_refuses_arguments_nested_too_deeply(broker: Broker) -> None:
    @broker.task
    async def takes(x: Any) -> None: ...

    for levels in (MAX_DEPTH + 1, 5000):
        with pytest.raises(TypeError, match="nested"):
            await takes.kiq(_deep(levels))
    with pytest.raises(SerializationError):
        await takes.kiq(_deep(MAX_DEPTH + 1))
    assert await broker.transport.queue_stats() == []


async def test_a_malformed_entry_is_dead_lettered_and_the_batch_runs(
    planted: tuple[Engine, Any],
) -> None:
    engine, plant = planted
    broker = AppBroker(engine)

    @broker.task
    async def work(n: int) -> int:
        return n * 2

    handles = [await work.kiq(n) for n in range(3)]
    word = await plant("default")
    handles += [await work.kiq(n) for n in range(3, 6)]
    async with conveyor.testing.worker(broker, queues="default"):
        results = await asyncio.gather(*(h.wait_result(timeout=15) for h in handles))
        assert [r.return_value for r in results] == [n * 2 for n in range(6)]

        async def letters() -> list[str]:
            return [d.reason for d in await broker.transport.dead_letters()]

        for _ in range(200):
            if await letters():
                break
            await asyncio.sleep(0.05)
        [reason] = await letters()
    assert reason.startswith("SerializationError: malformed entry")
    assert word in reason
