"""Taskiq's scheduling, ported with only its imports changed (`taskiq_docs/scheduling.py`), on a
real Redis: label schedules with Taskiq's keys, dynamic schedules added and removed through a
Redis schedule source, a schedule source of one's own, and the scheduler sending their runs."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from conveyor.compat.taskiq.scheduler import CreatedSchedule
from conveyor.scheduler.loop import run_id
from conveyor.testing import worker
from tests.servers import drop_prefix, redis_url, unique_prefix

DOCS = Path(__file__).parent / "taskiq_docs"


@pytest.fixture
async def docs(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ModuleType]:
    url, prefix = redis_url(), unique_prefix()
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("QUEUE_NAME", prefix)
    spec = importlib.util.spec_from_file_location("scheduling", DOCS / "scheduling.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "scheduling", module)
    spec.loader.exec_module(module)
    await module.broker.startup()
    yield module
    await module.broker.shutdown()
    drop_prefix(url, prefix)


async def test_label_schedules_read_as_taskiq_writes_them(docs: ModuleType) -> None:
    schedules = await docs.scheduler.sources[0].get_schedules()
    by_args = {tuple(s.args): s for s in schedules}
    assert by_args[(1,)].cron == "*/5 * * * *"
    assert (by_args[(2,)].schedule_id, by_args[(2,)].cron_offset) == ("nine", "Europe/Paris")
    assert by_args[(3,)].cron_offset == "UTC+03:00"
    assert by_args[(4,)].interval == 60
    listed = {info.id: info for info in await docs.scheduler.list()}
    nine = listed["label:scheduling:heavy_task:nine"].next_fire
    assert nine is not None
    assert nine.astimezone(UTC).hour in (7, 8)  # 9:00 in Paris is 7:00 or 8:00 UTC


async def test_dynamic_schedules_through_a_redis_source(docs: ModuleType) -> None:
    source = docs.redis_source
    cron = (
        await docs.my_task.kicker()
        .with_schedule_id("cron-1")
        .schedule_by_cron(source, "*/5 * * * *", 11, arg2="every five minutes")
    )
    assert isinstance(cron, CreatedSchedule)
    assert cron.schedule_id == "cron-1"
    interval = await docs.my_task.schedule_by_interval(source, timedelta(minutes=1), 12, "x")
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    once = (
        await docs.my_task.kicker()
        .with_labels(priority=5)
        .schedule_by_time(source, soon, 13, arg2="once")
    )
    stored = {s.schedule_id: s for s in await source.get_schedules()}
    assert set(stored) == {"cron-1", interval.schedule_id, once.schedule_id}
    assert (stored["cron-1"].cron, stored["cron-1"].kwargs) == (
        "*/5 * * * *",
        {"arg2": "every five minutes"},
    )
    assert stored[once.schedule_id].labels == {"priority": 5}
    await cron.unschedule()
    await interval.unschedule()
    assert [s.schedule_id for s in await source.get_schedules()] == [once.schedule_id]

    async with worker(docs.broker):
        for _ in range(100):  # 5 s at most
            if not await source.get_schedules():
                break
            await asyncio.sleep(min(await docs.scheduler.tick(), 0.05))
        sent = docs.broker.get_handle(run_of(once.schedule_id, soon))
        result = await sent.wait_result(timeout=5)
    assert result.task_name == "scheduling:my_task"
    assert result.labels["priority"] == 5
    assert await source.get_schedules() == []  # a one-off schedule goes once sent


def run_of(schedule_id: str, when: datetime) -> str:
    return run_id(schedule_id, round(when.timestamp() * 1000))


async def test_a_source_of_ones_own_is_read_and_sent(docs: ModuleType) -> None:
    scheduler, state = docs.scheduler, docs.broker.state
    scheduler.refresh_delay = 0.0
    async with worker(docs.broker):
        deadline = time.monotonic() + 5
        last = None
        while last is None and time.monotonic() < deadline:  # every second from the next one
            pause = await scheduler.tick()
            last = await state.last_fire("source:from_my_source")
            if last is None:
                await asyncio.sleep(min(pause, 0.2))
        assert last is not None
        sent = docs.broker.get_handle(run_id("source:from_my_source", round(last * 1000)))
        result = await sent.wait_result(timeout=5)
    assert result.return_value == 101
