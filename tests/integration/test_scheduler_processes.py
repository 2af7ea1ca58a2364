"""The scheduler across real processes on SQLite and Redis: two `conveyor scheduler` processes
and a `conveyor worker` send each due run once; schedules added and removed at run time.

The app's `every_second` task has the label schedule `{"interval": 1}`; each run marks its task
id, which carries its fire time (`s-<hash>-<ms>`), so a run sent twice shows as a repeated id.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conveyor import Scheduler
from tests.integration.flows import ENGINES, Schedulers, fire_ms, flow_app
from tests.integration.test_worker_processes import eventually
from tests.servers import PrivateRedis

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(params=ENGINES)
async def flow(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[App]:
    async with flow_app(request.param, tmp_path, monkeypatch) as app:
        yield app


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Schedulers]:
    started = Schedulers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
        started.dump_logs()  # shown by pytest only when the test fails


def runs(flow: App, name: str, tag: str | None = None) -> list[str]:
    """Task ids of the runs of `name` (with `tag` as second field when given)."""
    return [f[0] for f in flow.marks(name) if tag is None or f[1] == tag]


def assert_once_per_second(task_ids: list[str]) -> None:
    assert len(task_ids) == len(set(task_ids)), f"a run was sent twice: {task_ids}"
    times = sorted(fire_ms(task_id) for task_id in task_ids)
    assert [b - a for a, b in itertools.pairwise(times)] == [1000] * (len(times) - 1)


async def test_two_schedulers_fire_an_every_second_schedule_once_per_second(
    flow: App, schedulers: Schedulers, workers: Workers
) -> None:
    schedulers.start(flow)
    schedulers.start(flow)
    workers.start(flow)
    await eventually(lambda: len(runs(flow, "every_second")) >= 4, 15, "four runs")
    schedulers.stop_all()
    await flow.broker.wait_all(timeout=10)
    assert_once_per_second(runs(flow, "every_second"))


async def test_a_run_claimed_by_a_killed_scheduler_is_sent_once_by_another(
    flow: App, schedulers: Schedulers, workers: Workers
) -> None:
    holder = schedulers.start(flow, env={"FLOW_HOLD_SEND_AFTER": "2"})
    await eventually(lambda: bool(flow.marks("held")), 15, "a claimed run held before its send")
    holder.kill()  # SIGKILL between the claim and the send
    holder.wait(5)
    [(held_id, _)] = flow.marks("held")
    schedulers.start(flow)
    workers.start(flow)
    await eventually(lambda: held_id in runs(flow, "every_second"), 20, "the held run, sent")
    await eventually(lambda: fire_ms(max(runs(flow, "every_second"))) > fire_ms(held_id), 10)
    schedulers.stop_all()
    await flow.broker.wait_all(timeout=10)
    assert_once_per_second(runs(flow, "every_second"))


async def test_schedules_added_at_run_time_fire_and_removed_ones_stop(
    flow: App, schedulers: Schedulers, workers: Workers
) -> None:
    schedulers.start(flow)
    schedulers.start(flow)
    workers.start(flow)
    stored, scheduler = flow.module.stored, Scheduler(flow.broker)
    sid = await stored.schedule_by_interval(scheduler, 1, "every")
    soon = datetime.now(UTC) + timedelta(seconds=1)
    await stored.schedule_by_time(scheduler, soon, "once")
    await eventually(lambda: len(runs(flow, "stored", "every")) >= 2, 15, "two stored runs")
    assert await scheduler.remove(sid) is True
    removed_at = time.time()
    seen = len(runs(flow, "every_second"))
    # The schedulers keep ticking: three more label runs, and the removed schedule sent nothing.
    await eventually(lambda: len(runs(flow, "every_second")) >= seen + 3, 15, "label runs")
    await flow.broker.wait_all(timeout=10)
    every = runs(flow, "stored", "every")
    assert_once_per_second(every)
    assert all(fire_ms(task_id) < removed_at * 1000 for task_id in every)
    assert len(runs(flow, "stored", "once")) == 1
    assert [s.task_name for s in await scheduler.list()] == [flow.module.every_second.name]


async def test_a_worker_with_the_scheduler_under_a_supervisor(flow: App, workers: Workers) -> None:
    supervisor = workers.start(flow, "--workers", "2", "--with-scheduler")
    await eventually(lambda: len(runs(flow, "every_second")) >= 3, 15, "three runs")
    assert_once_per_second(runs(flow, "every_second"))
    assert supervisor.stderr().count("scheduler on ") == 1  # in one of the two processes


async def test_inspect_schedules_lists_them(flow: App) -> None:
    sid = await flow.module.stored.schedule_by_cron(Scheduler(flow.broker), "0 9 * * 1", "x")
    env = {**os.environ, "CONVEYOR_BROKER_URL": flow.url, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "conveyor", "inspect", "schedules", flow.spec],
        cwd=flow.root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    shown = out.decode().splitlines()
    assert len(shown) == 2
    assert "every_second every 1 s next=" in shown[0]
    assert shown[1].startswith(f"{sid} {flow.module.stored.name} cron '0 9 * * 1' next=")
    assert '"args": ["x"]' in shown[1]


async def test_the_scheduler_rides_a_broker_outage(
    private_redis: PrivateRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    schedulers: Schedulers,
    workers: Workers,
) -> None:
    async with flow_app("redis", tmp_path, monkeypatch, server=private_redis.url) as app:
        scheduler = schedulers.start(app)
        workers.start(app)
        await eventually(lambda: len(runs(app, "every_second")) >= 2, 15, "two runs")
        private_redis.stop()
        log = schedulers.log(scheduler)
        await eventually(lambda: "broker unavailable" in log.read_text(), 10, "the outage logged")
        private_redis.start()
        before = len(runs(app, "every_second"))
        await eventually(lambda: len(runs(app, "every_second")) >= before + 2, 20, "runs again")
        await eventually(lambda: "broker reachable again" in log.read_text(), 5, "recovery logged")
        assert log.read_text().count("broker unavailable") == 1  # one line, then quiet retries
        task_ids = runs(app, "every_second")
        assert len(task_ids) == len(set(task_ids))
