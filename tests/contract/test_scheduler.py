"""The scheduler on every engine: exactly-once sends, stored schedules, misfires.

Ticks are driven with explicit times (`tick(now)`), so the tests never wait for a clock; the
runs go through a real worker loop and each records its task id.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from conveyor import Broker, Context, Depends, Middleware, Scheduler, Task, TaskMessage
from conveyor.message import MAX_DEPTH
from conveyor.scheduler import Cron, Interval, ScheduleEntry
from conveyor.scheduler.loop import run_id

pytestmark = pytest.mark.timeout(60)


@dataclass
class Recorder:
    task: Task[..., str]
    ran: list[tuple[str, int, int]]


def recorder(broker: Broker, **labels: Any) -> Recorder:
    ran: list[tuple[str, int, int]] = []

    @broker.task("tests.record", **labels)
    async def record(n: int = 0, k: int = 0, context: Context = Depends()) -> str:
        ran.append((context.message.task_id, n, k))
        return context.message.task_id

    return Recorder(record, ran)


async def settle(broker: Broker) -> None:
    await broker.wait_all(timeout=10)


async def test_two_schedulers_send_each_run_once(running: Broker) -> None:
    rec = recorder(running, schedule=[{"interval": 1, "args": [7]}])
    first, second = Scheduler(running), Scheduler(running)
    start = math.floor(time.time()) + 0.5
    await asyncio.gather(first.tick(start), second.tick(start))  # both start: nothing due yet
    for step in (1, 2, 3):
        await asyncio.gather(first.tick(start + step), second.tick(start + step))
    await settle(running)
    entry = rec.task.schedules[0]
    expected = [run_id(entry.id, int((start - 0.5 + step) * 1000)) for step in (1, 2, 3)]
    assert sorted(rec.ran) == sorted((task_id, 7, 0) for task_id in expected)


async def test_a_fire_whose_scheduler_died_after_claiming_it_is_sent_once(
    running: Broker,
) -> None:
    rec = recorder(running, schedule=[{"interval": 10}])
    start = math.floor(time.time() / 10) * 10
    first, second = Scheduler(running), Scheduler(running)
    await asyncio.gather(first.tick(start + 0.5), second.tick(start + 0.5))
    fire_ms = (start + 10) * 1000
    claim = f"claim:fire:{rec.task.schedules[0].id}:{fire_ms}"
    await running.store.set(claim, repr(time.time()).encode(), 300)  # a scheduler sending it
    await asyncio.gather(first.tick(start + 10.5), second.tick(start + 10.5))
    await settle(running)
    assert rec.ran == []  # the holder may still be sending: both leave it
    dead = time.time() - 2 * running.transport.lease_seconds  # it died before its send
    await running.store.set(claim, repr(dead).encode(), 300)
    await asyncio.gather(first.tick(start + 11), second.tick(start + 11))
    await asyncio.gather(first.tick(start + 12), second.tick(start + 12))
    await settle(running)
    assert [task_id for task_id, _, _ in rec.ran] == [
        run_id(rec.task.schedules[0].id, int(fire_ms))
    ]
    assert await running.store.get(claim) == b"sent"


async def test_a_fire_another_scheduler_marks_sent_is_left_to_it(running: Broker) -> None:
    rec = recorder(running, schedule=[{"interval": 10}])
    start = math.floor(time.time() / 10) * 10
    scheduler = Scheduler(running)
    await scheduler.tick(start + 0.5)
    claim = f"claim:fire:{rec.task.schedules[0].id}:{(start + 10) * 1000}"
    await running.store.set(claim, repr(time.time()).encode(), 300)
    await scheduler.tick(start + 10.5)
    await running.store.set(claim, b"sent", 300)  # its holder sent it
    await scheduler.tick(start + 11)
    dead = time.time() - 2 * running.transport.lease_seconds
    await running.store.set(claim, repr(dead).encode(), 300)  # would be taken over if unsure
    await scheduler.tick(start + 12)
    await settle(running)
    assert rec.ran == []


async def test_a_late_tick_sends_every_run_within_the_grace(running: Broker) -> None:
    rec = recorder(running, schedule=[{"interval": 0.25}])
    scheduler = Scheduler(running, misfire_grace=1.0)
    start = math.floor(time.time())
    await scheduler.tick(start + 0.01)
    await scheduler.tick(start + 0.9)  # 0.25, 0.5 and 0.75 are due, none too late
    await settle(running)
    assert len(rec.ran) == 3


async def test_a_stored_schedule_fires_until_removed(running: Broker) -> None:
    rec = recorder(running)
    scheduler = Scheduler(running)
    sid = await rec.task.schedule_by_interval(scheduler, 1, 5, k=6)
    added = time.time()
    await scheduler.tick(added + 1.01)
    await settle(running)
    assert [(n, k) for _, n, k in rec.ran] == [(5, 6)]
    other = Scheduler(running)  # another process sees it too, and its removal
    assert [s.id for s in await other.list() if s.stored] == [sid]
    assert await other.remove(sid) is True
    assert await other.remove(sid) is False
    await scheduler.tick(added + 2.01)
    await scheduler.tick(added + 3.01)
    await settle(running)
    assert len(rec.ran) == 1
    assert [s for s in await scheduler.list() if s.stored] == []


async def test_a_stored_cron_schedule_with_args_kwargs_and_labels(running: Broker) -> None:
    rec = recorder(running)
    scheduler = Scheduler(running)
    sig = rec.task.s(3, k=4).with_labels(queue="high", owner="ops")
    sid = await scheduler.add(sig, Cron("* * * * *", tz="Asia/Tokyo"))
    minute = (math.floor(time.time() / 60) + 1) * 60
    await scheduler.tick(minute + 0.1)
    await settle(running)
    task_id = run_id(sid, minute * 1000)
    assert rec.ran == [(task_id, 3, 4)]
    result = await running.get_handle(task_id).wait_result(timeout=5)
    assert result.labels["queue"] == "high"
    assert result.labels["owner"] == "ops"
    listed = {s.id: s for s in await scheduler.list()}
    assert listed[sid].schedule == "cron '* * * * *' (Asia/Tokyo)"
    upcoming = listed[sid].next_fire
    assert upcoming is not None
    assert upcoming > datetime.now(UTC)


async def test_a_one_off_runs_once_even_when_late(running: Broker) -> None:
    rec = recorder(running)
    scheduler = Scheduler(running)
    when = datetime.now(UTC) + timedelta(seconds=0.5)
    await rec.task.schedule_by_time(scheduler, when, 9)
    await scheduler.tick(when.timestamp() + 30)  # far past the grace: a one-off still runs
    await Scheduler(running).tick(when.timestamp() + 31)
    await settle(running)
    assert [n for _, n, _ in rec.ran] == [9]
    assert [s for s in await scheduler.list() if s.stored] == []


@pytest.mark.parametrize(("misfire", "runs"), [("skip", 0), ("once", 1)])
async def test_runs_missed_while_down_follow_the_misfire_policy(
    running: Broker, misfire: str, runs: int
) -> None:
    rec = recorder(running)
    await rec.task.schedule_by_interval(Scheduler(running), 10)
    later = Scheduler(running, misfire=misfire, misfire_grace=1.0)  # starts after 3 missed runs
    await later.tick(time.time() + 35)
    await settle(running)
    assert len(rec.ran) == runs


async def test_label_schedules_are_listed_with_their_next_fire(running: Broker) -> None:
    recorder(running, schedule=[{"cron": "0 9 * * 1", "tz": "Europe/Moscow"}, {"interval": 30}])
    listed = await Scheduler(running).list()
    assert [(s.task_name, s.schedule, s.stored) for s in listed] == [
        ("tests.record", "cron '0 9 * * 1' (Europe/Moscow)", False),
        ("tests.record", "every 30 s", False),
    ]
    monday = listed[0].next_fire
    assert monday is not None
    assert monday.astimezone(UTC).hour == 6
    assert monday.weekday() == 0


async def test_run_stops_when_asked(running: Broker) -> None:
    recorder(running, schedule=[{"interval": 3600}])
    stop = asyncio.Event()
    task = asyncio.create_task(Scheduler(running).run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_interval_schedules_added_at_run_time_start_from_now(running: Broker) -> None:
    rec = recorder(running)
    scheduler = Scheduler(running)
    before = time.time()
    sid = await scheduler.add(rec.task.s(), Interval(100))
    (info,) = [s for s in await scheduler.list() if s.id == sid]
    assert info.next_fire is not None
    assert before + 100 <= info.next_fire.timestamp() <= time.time() + 100


async def test_a_broken_schedule_does_not_stop_the_others(running: Broker) -> None:
    rec = recorder(running)

    @running.task("tests.broken")
    async def broken() -> None: ...

    class Refuse(Middleware):
        def pre_send(self, message: TaskMessage) -> TaskMessage:
            if message.task_name == "tests.broken":
                raise ValueError("refused")
            return message

    running.add_middlewares([Refuse()])
    scheduler = Scheduler(running)
    await scheduler.add(broken.s(), Interval(1))
    await rec.task.schedule_by_interval(scheduler, 1, 1)
    await scheduler.tick(time.time() + 1.5)
    await settle(running)
    assert [n for _, n, _ in rec.ran] == [1]


async def test_stored_arguments_must_fit_and_encode(running: Broker) -> None:
    rec = recorder(running)
    scheduler = Scheduler(running)
    with pytest.raises(TypeError, match=r"tests\.record: too many positional"):
        await scheduler.add(rec.task.s(1, 2, 3), Interval(1))
    with pytest.raises(TypeError, match=r"tests\.record"):
        await scheduler.add(rec.task.s(object()), Interval(1))
    deep: Any = 0
    for _ in range(MAX_DEPTH + 1):  # what every fire would fail to send
        deep = [deep]
    with pytest.raises(TypeError, match=r"tests\.record: .*nested"):
        await scheduler.add(rec.task.s(deep), Interval(1))
    assert await scheduler.list() == []


async def test_a_stalled_scheduler_does_not_catch_up_what_others_sent(running: Broker) -> None:
    rec = recorder(running, schedule=[{"interval": 10}])
    start = math.floor(time.time() / 10) * 10
    busy = Scheduler(running, misfire_grace=1.0)
    stalled = Scheduler(running, misfire="once", misfire_grace=1.0)
    await asyncio.gather(busy.tick(start), stalled.tick(start))
    for step in (1, 2, 3):
        await busy.tick(start + 10 * step + 0.001)  # the other one is paused meanwhile
    for claim in await running.store.scan("claim:fire:"):  # as if they had expired
        await running.store.delete(claim)
    await stalled.tick(start + 35)  # wakes up late: nothing was missed by everyone
    await settle(running)
    assert len(rec.ran) == 3


@pytest.mark.parametrize("ago", [0.0, 60.0])
async def test_a_one_off_at_now_or_in_the_past_fires_once(running: Broker, ago: float) -> None:
    rec = recorder(running)
    scheduler = Scheduler(running)
    await rec.task.schedule_by_time(scheduler, datetime.now(UTC) - timedelta(seconds=ago), 4)
    await scheduler.tick()
    await Scheduler(running).tick()
    await scheduler.tick(time.time() + 5)
    await settle(running)
    assert [n for _, n, _ in rec.ran] == [4]
    assert [s for s in await scheduler.list() if s.stored] == []


class Broken:
    """A schedule whose next fire time cannot be computed; `asked` is set by each attempt."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    def next_after(self, t: float) -> float | None:
        self.asked.set()
        raise ValueError("broken schedule")

    def describe(self) -> str:
        return "broken"


async def test_a_schedule_failing_at_run_time_does_not_stop_the_others(running: Broker) -> None:
    rec = recorder(running, schedule=[{"interval": 1, "args": [2]}])
    schedule = Broken()
    broken = ScheduleEntry("label:broken", rec.task.name, cast(Any, schedule))
    rec.task.schedules.insert(0, broken)
    scheduler = Scheduler(running)
    start = math.floor(time.time()) + 0.5
    await scheduler.tick(start)
    await scheduler.tick(start + 1)
    await settle(running)
    assert [n for _, n, _ in rec.ran] == [2]
    listed = {s.id: s for s in await scheduler.list()}
    assert listed["label:broken"].next_fire is None
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    for _ in range(2):  # two ticks meet the broken schedule: the loop goes on
        schedule.asked.clear()
        await asyncio.wait_for(schedule.asked.wait(), 5)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)
