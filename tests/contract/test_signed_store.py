"""With a secret key, nothing read back from a store is trusted without its signature.

Each test plays someone with write access to the server (Redis, the SQLite file) but not the
key: they plant a schedule, a pickled result, a group member's value or a worker's recent list,
or they put a captured signed message back in a queue. Each plant is refused (never sent, never
loaded, never shown, never run twice or early) while the app's own data keeps working. The
broker uses the pickle serializer, where a value loaded unchecked runs code.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import pickle
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor import Broker, RedisBroker, Scheduler, SqliteBroker, TaskStatus, chord
from conveyor.engines.base import Outgoing
from conveyor.errors import SignatureError
from conveyor.inspector import Inspector
from conveyor.recent import SIGNED_RECENT
from conveyor.schedules import Interval, ScheduleEntry
from conveyor.serializers import Signer
from conveyor.testing import worker
from tests.contract.test_broker import eventually
from tests.servers import drop_prefix, redis_url, unique_prefix

pytestmark = pytest.mark.timeout(60)

KEY = "the-apps-key"


@pytest.fixture(params=["sqlite", "redis"])
async def signed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A started broker with a secret key and the pickle serializer, on SQLite and Redis."""
    options: dict[str, Any] = {"serializer": "pickle", "secret_key": KEY, "lease_seconds": 2.0}
    made: Broker
    if request.param == "sqlite":
        made, url, prefix = SqliteBroker(str(tmp_path / "signed.db"), **options), "", ""
    else:
        url, prefix = redis_url(), unique_prefix()
        made = RedisBroker(url, prefix=prefix, **options)
    await made.startup()
    yield made
    await made.shutdown()
    if prefix:
        drop_prefix(url, prefix)


class Planted:
    """Creates a file when unpickled: the proof that a planted pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


def record(broker: Broker) -> tuple[Any, list[int]]:
    ran: list[int] = []

    @broker.task("tests.signed.record")
    async def task(n: int) -> int:
        ran.append(n)
        return n

    return task, ran


async def test_a_schedule_stored_without_the_key_is_never_sent(signed: Broker) -> None:
    task, ran = record(signed)
    now = time.time()
    every_second = Interval(1.0, anchor=now - 10)
    planted = ScheduleEntry("evil", task.name, every_second, args=[666], stored=True).to_json()
    await signed.state.put_schedule("evil", planted, now - 5)  # as `SET <prefix>:kv:sched:...`
    other_key = Signer("another key").derive("stored schedule").sign(planted)
    await signed.state.put_schedule("evil-2", other_key, now - 5)
    scheduler = Scheduler(signed)
    mine = await scheduler.add(task.s(1), every_second)

    assert [entry.id for entry in await scheduler.stored_entries()] == [mine]
    async with worker(signed):
        await scheduler.tick(now + 3)
        await signed.wait_all(timeout=10)
    assert ran, "the app's own schedule did not run"
    assert set(ran) == {1}, ran


async def test_a_result_or_progress_planted_without_the_key_is_never_loaded(
    signed: Broker, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Planted(marker))
    await signed.result_backend.set_result("planted", payload, None)
    await signed.result_backend.set_progress("planted", payload, None)
    handle = signed.get_handle("planted")
    with pytest.raises(SignatureError, match="stored result is not signed"):
        await handle.get_result()
    with pytest.raises(SignatureError, match="stored result is not signed"):
        await handle.get_progress()
    assert not marker.exists()

    task, _ = record(signed)
    async with worker(signed):  # the app's own results still read back
        assert (await (await task.kiq(4)).wait_result(timeout=10)).return_value == 4


async def test_a_group_value_planted_without_the_key_fails_the_workflow(
    signed: Broker, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    go = asyncio.Event()

    @signed.task("tests.signed.fast")
    async def fast() -> int:
        return 1

    @signed.task("tests.signed.gated")
    async def gated() -> int:
        await go.wait()
        return 2

    @signed.task("tests.signed.total")
    async def total(values: list[int]) -> int:
        return sum(values)

    async with worker(signed):
        handle = await chord([fast.s(), gated.s()], total.s()).kiq()
        first = f"{handle.task_id}-w.0-0"  # where the first member's value waits for the rest

        async def stored() -> bool:
            return await signed.result_backend.get_result(first) is not None

        await eventually(stored)
        await signed.result_backend.set_result(first, pickle.dumps(Planted(marker)), None)
        go.set()
        result = await handle.wait_result(timeout=10)
    assert result.status is TaskStatus.FAILED
    assert result.error_type == "SignatureError"
    assert not marker.exists()


async def test_recent_tasks_are_shown_only_as_the_apps_workers_wrote_them(signed: Broker) -> None:
    task, _ = record(signed)
    async with worker(signed):
        mine = await task.kiq(3)
        await mine.wait_result(timeout=10)
    forged = {"task_id": "forged", "task_name": task.name, "status": "failed", "args": [9]}
    lists = msgspec.json.encode({"recent": [forged], "failed": [forged]})
    await signed.state.put_recent("intruder", lists)  # unsigned
    wrong_types = {"task_id": 5, "task_name": task.name, "status": "failed"}
    kept = {**forged, "task_id": "kept"}
    typed = msgspec.json.encode({"recent": [wrong_types], "failed": [wrong_types, kept]})
    await signed.state.put_recent("typed", Signer(KEY).derive(SIGNED_RECENT).sign(typed))

    recent, failed = await Inspector(signed).recent()
    assert [entry["task_id"] for entry in recent] == [mine.task_id]
    assert [entry["task_id"] for entry in failed] == ["kept"]  # signed, and well-formed


async def test_a_captured_message_put_back_without_its_delay_waits_for_its_time(
    signed: Broker,
) -> None:
    task, ran = record(signed)
    message = signed.build_message(task.name, [1], {}, None, {"delay": 60}, None)
    captured = signed.outgoing(message)
    assert captured.eta is not None
    replayed = dataclasses.replace(captured, eta=None)  # due at once, by the queue's account

    async def put_back() -> bool:
        return await signed.transport.locate(message.task_id) == "delayed"

    async with worker(signed):
        await signed.transport.publish([replayed])
        await eventually(put_back)
    assert ran == []
    assert await signed.get_handle(message.task_id).get_result() is None


async def test_a_captured_message_put_back_after_its_run_is_not_run_again(signed: Broker) -> None:
    task, ran = record(signed)
    message = signed.build_message(task.name, [1], {}, None, None, None)
    captured: Outgoing = signed.outgoing(message)
    async with worker(signed):
        await signed.transport.publish([captured])
        first = await signed.get_handle(message.task_id).wait_result(timeout=10)
        await signed.transport.publish([captured])
        await signed.wait_all(timeout=10)
    assert ran == [1]
    again = await signed.get_handle(message.task_id).get_result()
    assert again is not None
    assert again.finished_at == first.finished_at


async def test_a_dead_letter_sent_back_runs_again(signed: Broker) -> None:
    fixed = asyncio.Event()

    @signed.task("tests.signed.fragile")
    async def fragile() -> str:
        if not fixed.is_set():
            raise RuntimeError("not fixed yet")
        return "fixed"

    async with worker(signed):
        handle = await fragile.kiq()
        assert (await handle.wait_result(timeout=10)).status is TaskStatus.FAILED
        fixed.set()
        assert await signed.requeue_dead([handle.task_id]) == 1
        assert (await handle.wait_result(timeout=10)).return_value == "fixed"
