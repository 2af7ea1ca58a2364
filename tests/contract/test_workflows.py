"""Workflows (`chain`, `group`, `chord`) on every engine, through a real worker loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import (
    Broker,
    ConfigurationError,
    InMemoryBroker,
    Middleware,
    TaskStatus,
    chain,
    chord,
    group,
)
from conveyor.errors import WorkflowError
from conveyor.message import TaskMessage
from conveyor.result import TaskResult
from conveyor.task import Signature, Task
from conveyor.workflows import WORKFLOW_LABEL, advance

pytestmark = pytest.mark.timeout(60)


@dataclass
class Tasks:
    add: Task[[int, int], int]
    mul: Task[[int, int], int]
    total: Task[[list[int]], int]
    boom: Task[..., int]
    ran: list[str]


def register(broker: Broker) -> Tasks:
    ran: list[str] = []

    @broker.task
    async def add(x: int, y: int) -> int:
        ran.append(f"add {x} {y}")
        return x + y

    @broker.task
    def mul(x: int, y: int) -> int:  # a sync step: runs in the thread pool
        ran.append(f"mul {x} {y}")
        return x * y

    @broker.task
    async def total(values: list[int]) -> int:
        ran.append(f"total {values}")
        return sum(values)

    @broker.task
    async def boom(*args: Any) -> int:
        ran.append("boom")
        raise ValueError(f"boom after {list(args)}")

    return Tasks(add, mul, total, boom, ran)


async def value(handle: Any) -> Any:
    result = await handle.wait_result(timeout=20)
    result.raise_for_error()
    return result.return_value


async def test_chain_passes_each_result_to_the_next(running: Broker) -> None:
    t = register(running)
    handle = await chain(t.add.s(1, 2), t.mul.s(10), t.add.s(5)).kiq()
    assert await value(handle) == 35
    assert t.ran == ["add 1 2", "mul 3 10", "add 30 5"]


async def test_si_ignores_the_previous_result(running: Broker) -> None:
    t = register(running)
    assert await value(await chain(t.add.s(1, 2), t.mul.si(4, 5)).kiq()) == 20


async def test_group_results_in_order(running: Broker) -> None:
    t = register(running)
    handle = await group(t.add.s(i, i) for i in range(10)).kiq()
    assert await value(handle) == [2 * i for i in range(10)]
    assert handle.task_name == "group"


async def test_chord_calls_the_body_with_the_list(running: Broker) -> None:
    t = register(running)
    handle = await chord(group(t.mul.s(i, 2) for i in range(6)), t.total.s()).kiq()
    assert await value(handle) == 30
    assert t.ran[-1] == "total [0, 2, 4, 6, 8, 10]"


async def test_a_group_inside_a_chain_gets_the_previous_result(running: Broker) -> None:
    t = register(running)
    flow = chain(t.add.s(1, 1), group(t.mul.s(2), t.mul.s(3), t.add.s(10)), t.total.s())
    assert await value(await flow.kiq()) == 4 + 6 + 12


async def test_a_chain_inside_a_group(running: Broker) -> None:
    t = register(running)
    flow = group(chain(t.add.s(1, 1), t.mul.s(5)), t.add.s(2, 2), chain(t.add.s(0, 1)))
    assert await value(await flow.kiq()) == [10, 4, 1]


async def test_nested_chords(running: Broker) -> None:
    t = register(running)
    inner = [chord([t.add.s(i, j) for j in range(3)], t.total.s()) for i in range(3)]
    assert await value(await chord(inner, t.total.s()).kiq()) == sum(
        i + j for i in range(3) for j in range(3)
    )


async def test_empty_group_and_chain(running: Broker) -> None:
    t = register(running)
    assert await value(await group([]).kiq(running)) == []
    assert await value(await chain(t.add.s(1, 2), group([]), t.total.s()).kiq()) == 0


async def test_a_failing_step_fails_the_chain_and_stops_it(running: Broker) -> None:
    t = register(running)
    handle = await chain(t.add.s(1, 1), t.boom.s(), t.mul.s(2)).kiq()
    result = await handle.wait_result(timeout=20)
    assert result.status is TaskStatus.FAILED
    assert result.error_type == "ValueError"
    assert result.error_message == "boom after [2]"
    assert result.labels["failed_task"] == t.boom.name
    await running.wait_all(timeout=10)
    assert not any(line.startswith("mul") for line in t.ran)


async def test_a_failing_member_fails_the_chord_without_its_body(running: Broker) -> None:
    t = register(running)
    members = [t.add.s(1, 1), t.boom.si(), t.add.s(2, 2)]
    handle = await chord(members, t.total.s()).kiq()
    result = await handle.wait_result(timeout=20)
    assert result.is_err
    assert result.error is not None
    assert result.error.exc_type == "ValueError"
    await running.wait_all(timeout=10)
    assert not any(line.startswith("total") for line in t.ran)


async def test_a_redelivered_step_sends_nothing_twice(running: Broker) -> None:
    """Advancing the same finished step twice (a redelivery) sends its successor once."""
    t = register(running)
    handle = await chain(t.add.s(1, 2), t.mul.s(10)).kiq()
    assert await value(handle) == 30
    first = f"{handle.task_id}-w.0"
    step = await running.get_handle(first).wait_result(timeout=5)
    message = TaskMessage(
        task_id=first, task_name=t.add.name, labels=dict(step.labels), args=[1, 2]
    )
    assert WORKFLOW_LABEL in message.labels
    await advance(running, message, step)
    await running.wait_all(timeout=10)
    assert t.ran.count("mul 3 10") == 1


async def test_a_group_member_counted_twice_completes_once(running: Broker) -> None:
    t = register(running)
    handle = await chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).kiq()
    assert await value(handle) == 6
    member = await running.get_handle(f"{handle.task_id}-w.0.1").wait_result(timeout=5)
    message = TaskMessage(task_id=member.task_id, task_name=t.add.name, labels=member.labels)
    await asyncio.gather(*(advance(running, message, member) for _ in range(3)))
    await running.wait_all(timeout=10)
    assert t.ran.count("total [2, 4]") == 1
    assert await value(handle) == 6


class Sends(Middleware):
    """Records the id of every message the broker sends."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def pre_send(self, message: TaskMessage) -> TaskMessage:
        self.ids.append(message.task_id)
        return message


async def finished_step(broker: Broker, task_id: str) -> tuple[TaskMessage, TaskResult[Any]]:
    """A finished step's message and result, as a redelivery of it would see them."""
    result = await broker.get_handle(task_id).wait_result(timeout=10)
    message = TaskMessage(task_id=task_id, task_name=result.task_name, labels=dict(result.labels))
    return message, result


async def test_an_unencodable_step_value_fails_the_workflow_and_is_dead_lettered(
    running: Broker,
) -> None:
    t = register(running)
    calls: list[int] = []

    @running.task
    async def opaque(n: int) -> Any:
        calls.append(n)
        return lambda: n  # neither JSON, msgpack nor pickle can hold it

    handle = await chain(t.add.s(1, 2), opaque.s(), t.mul.s(2)).kiq()
    result = await handle.wait_result(timeout=20)
    assert result.status is TaskStatus.FAILED
    assert result.error_type == "SerializationError"
    assert result.labels["failed_step"] == f"{handle.task_id}-w.1"
    # The step is dead-lettered first, then its own result stored: wait for that result.
    step = await running.get_handle(f"{handle.task_id}-w.1").wait_result(timeout=10)
    assert step.status is TaskStatus.FAILED
    assert f"{handle.task_id}-w.1" in [d.task_id for d in await running.transport.dead_letters()]
    assert calls == [3]  # ran once: not delivered again
    assert not any(line.startswith("mul") for line in t.ran)


async def test_a_group_value_gone_is_a_workflow_error(running: Broker) -> None:
    t = register(running)
    handle = await chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).kiq()
    assert await value(handle) == 6
    await running.result_backend.delete(f"{handle.task_id}-w.0-0")  # e.g. evicted
    message, member = await finished_step(running, f"{handle.task_id}-w.0.1")
    with pytest.raises(WorkflowError, match="value is gone"):
        await advance(running, message, member)


async def test_a_successor_is_sent_once_even_when_its_result_is_not_kept(running: Broker) -> None:
    t = register(running)
    sends = Sends()
    running.add_middlewares([sends])
    handle = await chain(t.add.s(1, 2), t.mul.s(10).with_labels(store_result=False)).kiq()
    assert await value(handle) == 30
    message, step = await finished_step(running, f"{handle.task_id}-w.0")
    assert await advance(running, message, step) == 0.0  # a late redelivery of the first step
    await running.wait_all(timeout=10)
    assert sends.ids.count(f"{handle.task_id}-w.1") == 1
    assert t.ran.count("mul 3 10") == 1


async def test_an_unmarked_claim_waits_for_its_holder_or_is_taken_over(running: Broker) -> None:
    t = register(running)
    sends = Sends()
    running.add_middlewares([sends])
    handle = await chain(t.add.s(1, 2), t.mul.s(10)).kiq()
    assert await value(handle) == 30
    message, step = await finished_step(running, f"{handle.task_id}-w.0")
    # The same first step in a workflow whose second step was never sent:
    flow = f"{handle.task_id}-again"
    labels = {**message.labels, WORKFLOW_LABEL: {**message.labels[WORKFLOW_LABEL], "id": flow}}
    message = TaskMessage(task_id=f"{flow}-w.0", task_name=message.task_name, labels=labels)
    successor, store = f"{flow}-w.1", running.store
    claim = f"claim:step:{successor}"
    await store.set(claim, repr(time.time()).encode())  # a holder still sending
    assert await advance(running, message, step) > 0  # put back to try again later
    assert successor not in sends.ids
    stale = time.time() - 2 * running.transport.lease_seconds  # a holder that died before it sent
    await store.set(claim, repr(stale).encode())
    assert await advance(running, message, step) == 0.0  # taken over: sent
    assert await advance(running, message, step) == 0.0  # marked sent: not again
    assert sends.ids.count(successor) == 1
    assert await store.get(claim) == b"sent"
    assert await value(running.get_handle(flow)) == 30


async def test_a_long_chain_runs_in_place() -> None:
    broker = InMemoryBroker(await_inplace=True)
    t = register(broker)
    try:
        handle = await chain(t.add.s(0, 1), *(t.add.s(1) for _ in range(299))).kiq()
        assert await value(handle) == 300
    finally:
        await broker.shutdown()


async def test_workflow_without_a_task_needs_a_broker() -> None:
    with pytest.raises(ConfigurationError, match="broker"):
        await chain(Signature("some.task")).kiq()


async def test_kiq_sync_from_plain_code() -> None:
    broker = InMemoryBroker(await_inplace=True)
    t = register(broker)

    def plain() -> Any:
        return chain(t.add.s(2, 3), t.mul.s(2)).kiq_sync().wait_result(timeout=10)

    try:
        result: TaskResult[Any] = await asyncio.to_thread(plain)
    finally:
        await asyncio.to_thread(broker.shutdown_sync)
    assert result.return_value == 10


async def test_bad_step_labels_are_refused_before_sending(running: Broker) -> None:
    t = register(running)
    with pytest.raises(ConfigurationError, match="priority"):
        await chain(t.add.s(1, 2), t.mul.s(3).with_labels(priority=42)).kiq()


def test_a_workflow_takes_only_signatures() -> None:
    with pytest.raises(TypeError, match="signatures"):
        chain(lambda: 1)  # type: ignore[arg-type]  # the mistake under test


def test_the_celery_patterns_example_runs(tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "examples" / "celery_patterns" / "main.py"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "chain: 106" in done.stdout
    assert "chord: 12" in done.stdout
