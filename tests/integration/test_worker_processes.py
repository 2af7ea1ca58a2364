"""Worker behaviour with real worker processes started through the CLI on the SQLite broker.

The same behaviours as `tests/contract/test_broker.py`, but across processes: the test is the
producer, `python -m conveyor worker` runs the tasks, and crashes are real signals. Tasks are in
`app_template.py`; they leave marks in files, which the tests wait on (never on fixed sleeps).
SIGTERM of a lone worker and a task longer than its lease are in `test_engine_crashes.py`, the
same tests on every engine.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from conveyor import TaskHandle, TaskResult, TaskStatus

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, WorkerProcess, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

Handles = list[TaskHandle[Any]]


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `check` (sync or async) until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if not isinstance(found, bool):
            found = await found
        if found:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.02)


def pid_of(worker_name: str | None) -> int:
    """The pid in a result's `worker` ("host:pid")."""
    assert worker_name, "the result names no worker"
    return int(worker_name.rsplit(":", 1)[1])


async def results(handles: Handles, timeout: float = 20.0) -> list[TaskResult[Any]]:
    """Wait for every handle's result, all within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    found = []
    for handle in handles:
        left = max(deadline - time.monotonic(), 0.01)
        found.append(await handle.wait_result(timeout=left))
    return found


def assert_succeeded(found: list[TaskResult[Any]]) -> None:
    failed = [(r.task_id, r.status, r.error_type, r.error_message) for r in found if r.is_err]
    assert not failed


async def live_children(app: App, supervisor: WorkerProcess, count: int) -> set[int]:
    """Wait until `count` children of `supervisor` publish heartbeats; return their pids."""
    found: set[int] = set()

    async def ready() -> bool:
        nonlocal found
        found = supervisor.child_pids() & set(await app.live_workers())
        return len(found) == count

    await eventually(ready, 15, f"{count} worker processes heartbeating")
    return found


def numbers(app: App, name: str, pid: int | None = None) -> list[int]:
    """The task numbers in `marks/<name>.txt`, only those marked by `pid` when given."""
    return [int(f[0]) for f in app.marks(name) if pid is None or int(f[1]) == pid]


# -- 1. many tasks over two processes ----------------------------------------------------------


async def test_hundreds_of_tasks_across_two_worker_processes(app: App, workers: Workers) -> None:
    supervisor = workers.start(app, "--workers", "2")
    children = await live_children(app, supervisor, 2)
    m = app.module
    sigs = [m.add.s(i, 1) if i % 2 else m.mul.s(i, 3) for i in range(500)]
    handles = await app.broker.kiq_many(sigs)
    found = await results(handles, timeout=40)
    assert_succeeded(found)
    assert [r.return_value for r in found] == [i + 1 if i % 2 else 3 * i for i in range(500)]
    assert {r.task_name for r in found} == {m.add.name, m.mul.name}
    pids = {pid_of(r.worker) for r in found}
    assert pids == children  # both worker processes did work


# -- 2/3. SIGKILL loses nothing -----------------------------------------------------------------


async def test_sigkill_of_a_single_worker_loses_nothing(app: App, workers: Workers) -> None:
    first = workers.start(app, "--max-async-tasks", "4")
    handles = await app.broker.kiq_many([app.module.work.s(n, 0.5) for n in range(12)])

    def some_done_some_running() -> bool:
        done = numbers(app, "done")
        return len(done) >= 4 and len(numbers(app, "started")) > len(done)

    await eventually(some_done_some_running, 15, "a first wave done and a second running")
    first.kill()
    killed_at = time.time()
    in_flight = set(numbers(app, "started")) - set(numbers(app, "done"))
    assert in_flight, "nothing was running when the worker was killed"

    second = workers.start(app, "--max-async-tasks", "4")
    found = await results(handles, timeout=20)
    assert_succeeded(found)
    assert [r.return_value for r in found] == list(range(12))
    assert set(numbers(app, "done")) == set(range(12))  # every effect recorded
    restarts = [f for f in app.marks("started") if int(f[1]) == second.pid]
    for n in in_flight:
        rerun = [float(f[2]) for f in restarts if int(f[0]) == n]
        assert rerun, f"task {n} in flight at the kill was not run again"
        assert rerun[0] - killed_at < 2 + 3.0  # delivered again soon after its lease ran out
        assert pid_of(found[n].worker) == second.pid


async def test_supervisor_restarts_a_sigkilled_child_and_work_goes_on(
    app: App, workers: Workers
) -> None:
    supervisor = workers.start(app, "--workers", "2", "--max-async-tasks", "3")
    before = await live_children(app, supervisor, 2)
    work = app.module.work
    handles = await app.broker.kiq_many([work.s(n, 0.5) for n in range(16)])
    victim = 0

    def a_child_runs_tasks() -> bool:
        nonlocal victim
        for pid in before:
            if set(numbers(app, "started", pid)) - set(numbers(app, "done", pid)):
                victim = pid
                return True
        return False

    await eventually(a_child_runs_tasks, 15, "a child running tasks")
    killed = psutil.Process(victim)
    killed.kill()
    await asyncio.to_thread(killed.wait, 10)  # gone once the supervisor has reaped it
    lost = set(numbers(app, "started", victim)) - set(numbers(app, "done", victim))
    after = await live_children(app, supervisor, 2)
    assert victim not in after
    (replacement,) = after - before
    assert supervisor.proc.poll() is None

    found = await results(handles, timeout=20)
    assert_succeeded(found)
    assert set(numbers(app, "done")) == set(range(16))
    assert all(pid_of(found[n].worker) != victim for n in lost)
    more = await app.broker.kiq_many([work.s(n, 0.3) for n in range(100, 112)])
    later = await results(more, timeout=20)
    assert_succeeded(later)
    assert replacement in {pid_of(r.worker) for r in later}  # the new child takes work


# -- 4/5. SIGTERM: drain, then hand back -------------------------------------------------------


async def test_sigterm_to_the_supervisor_drains_every_child(app: App, workers: Workers) -> None:
    supervisor = workers.start(app, "--workers", "2", "--max-async-tasks", "1")
    children = await live_children(app, supervisor, 2)
    handles = await app.broker.kiq_many([app.module.work.s(n, 1.0) for n in range(6)])
    await eventually(lambda: _started_by(app) == children, 15, "both children running a task")
    running = set(numbers(app, "started"))

    start = time.monotonic()
    assert supervisor.terminate(timeout=10) == 0
    assert time.monotonic() - start < 5
    assert not _any_alive(children)
    assert set(numbers(app, "done")) == running
    for n, handle in enumerate(handles):
        expected = TaskStatus.SUCCEEDED if n in running else TaskStatus.QUEUED
        assert await handle.status() is expected
    assert not children & set(await app.live_workers())  # heartbeats withdrawn


def _started_by(app: App) -> set[int]:
    return {int(fields[1]) for fields in app.marks("started")}


def _any_alive(pids: set[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


async def test_children_stop_when_the_supervisor_is_killed(app: App, workers: Workers) -> None:
    supervisor = workers.start(app, "--workers", "2")
    children = await live_children(app, supervisor, 2)
    supervisor.kill()
    await eventually(lambda: not _any_alive(children), 10, "the children gone")


async def test_an_idle_worker_takes_no_work_after_sigterm(app: App, workers: Workers) -> None:
    worker = workers.start(app)
    await eventually(lambda: _has_pids(app, {worker.pid}), 15, "the worker heartbeating")
    worker.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: "SIGTERM received" in worker.stderr(), 10, "the signal handled")
    handle = await app.module.work.kiq(1, 0.1)  # sent while the worker still waits for messages
    assert worker.proc.wait(10) == 0
    assert numbers(app, "started") == []
    assert await handle.status() is TaskStatus.QUEUED


@pytest.mark.parametrize("task", ["slow_first", "slow_first_sync", "slow_first_process"])
async def test_shutdown_timeout_hands_a_long_task_back(
    app: App, workers: Workers, task: str
) -> None:
    worker = workers.start(app, "--shutdown-timeout", "1")
    handle = await getattr(app.module, task).kiq(7, 30)
    await eventually(lambda: numbers(app, "started") == [7], 15, "the long task running")

    start = time.monotonic()
    assert worker.terminate(timeout=10) == 0
    assert time.monotonic() - start < 4
    assert await handle.get_result() is None  # not failed, not cancelled: handed back
    assert await handle.status() is TaskStatus.QUEUED
    assert await app.broker.transport.dead_letters() == []

    workers.start(app)
    result = await handle.wait_result(timeout=15)
    assert result.status is TaskStatus.SUCCEEDED
    assert result.return_value == 7
    assert numbers(app, "started") == [7, 7]
    assert numbers(app, "done") == [7]


async def _has_pids(app: App, pids: set[int]) -> bool:
    return pids <= set(await app.live_workers())


# -- 6. task options through a worker process ---------------------------------------------------


async def test_retries_with_backoff(app: App, workers: Workers) -> None:
    workers.start(app)
    ok = await app.module.flaky.kiq(2)
    bad = await app.module.flaky.kiq(5)
    await eventually(lambda: _status_is(bad, TaskStatus.RETRYING), 10, "a task retrying")

    result = await ok.wait_result(timeout=15)
    assert result.return_value == 3
    assert result.attempts == 3
    times = [float(f[2]) for f in app.marks("flaky") if f[0] == ok.task_id]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.19
    assert times[2] - times[1] >= 0.39  # the delay doubled

    failed = await bad.wait_result(timeout=15)
    assert failed.status is TaskStatus.FAILED
    assert failed.attempts == 4
    assert failed.error_type == "ConnectionError"
    assert bad.task_id in [d.task_id for d in await app.broker.transport.dead_letters()]


async def _status_is(handle: TaskHandle[Any], status: TaskStatus) -> bool:
    return await handle.status() is status


async def test_hard_timeout_stops_async_sync_and_process_tasks(app: App, workers: Workers) -> None:
    worker = workers.start(app)
    m = app.module
    start = time.monotonic()
    handles = [await m.too_slow.kiq(), await m.too_slow_sync.kiq(), await m.too_slow_process.kiq()]
    for result in await results(handles, timeout=10):
        assert result.status is TaskStatus.FAILED
        assert result.error_type == "TimeoutError"
    assert time.monotonic() - start < 5
    after = await (await m.add.kiq(1, 2)).wait_result(timeout=10)
    assert after.return_value == 3  # the worker goes on
    assert worker.proc.poll() is None
    assert worker.terminate(timeout=10) == 0


async def test_delay_and_eta(app: App, workers: Workers) -> None:
    workers.start(app)
    stamp = app.module.stamp
    sent = time.time()
    delayed = await stamp.kicker().with_delay(1.0).kiq()
    at = await stamp.kicker().with_eta(datetime.now(UTC) + timedelta(seconds=1)).kiq()
    assert await delayed.status() is TaskStatus.SCHEDULED
    assert await at.status() is TaskStatus.SCHEDULED
    for result in await results([delayed, at], timeout=10):
        assert 0.99 <= result.return_value - sent < 5


async def test_priorities_run_higher_first(app: App, workers: Workers) -> None:
    ordered = app.module.ordered
    priorities = [1, 5, 9, 0, 7, 5]
    sigs = [ordered.s(n).with_labels(priority=p) for n, p in enumerate(priorities)]
    handles = await app.broker.kiq_many(sigs)  # all queued before any worker runs
    workers.start(app, "--queues", "prio", "--max-async-tasks", "1")
    assert_succeeded(await results(handles))
    assert numbers(app, "order") == [2, 4, 1, 5, 0, 3]  # by priority, then first sent first


async def test_cancel_queued_and_running_tasks(app: App, workers: Workers) -> None:
    workers.start(app)
    m = app.module
    queued = await m.stamp.kicker().with_delay(30).kiq()
    assert await queued.cancel() is True
    assert await queued.status() is TaskStatus.CANCELLED

    busy = [await m.sleepy.kiq("async"), await m.sleepy_sync.kiq("sync")]
    await eventually(lambda: len(app.marks("sleepy")) == 2, 10, "both tasks running")
    assert await _status_is(busy[0], TaskStatus.RUNNING)
    start = time.monotonic()
    assert [await handle.cancel() for handle in busy] == [False, False]
    for result in await results(busy, timeout=10):
        assert result.status is TaskStatus.CANCELLED
    assert time.monotonic() - start < 5
    assert (await (await m.add.kiq(2, 2)).wait_result(timeout=10)).return_value == 4


async def test_progress_is_readable_while_the_task_runs(app: App, workers: Workers) -> None:
    workers.start(app)
    handle = await app.module.report.kiq()
    await eventually(lambda: _progress_is(handle, {"done": 1, "total": 2}), 10, "progress")
    assert await handle.status() is TaskStatus.RUNNING
    app.open_gate("report")
    assert (await handle.wait_result(timeout=10)).return_value == "reported"
    assert await handle.get_progress() == {"done": 2, "total": 2}


async def _progress_is(handle: TaskHandle[Any], expected: Any) -> bool:
    return bool(await handle.get_progress() == expected)


async def test_generator_tasks_stream_from_the_worker(app: App, workers: Workers) -> None:
    workers.start(app)
    handle = await app.module.squares.kiq(4)
    items = handle.stream().__aiter__()
    assert await anext(items) == 0  # the first item arrives while the task still runs
    assert not await handle.is_ready()
    app.open_gate("squares")
    assert [item async for item in items] == [1, 4, 9]
    assert (await handle.wait_result(timeout=10)).return_value == [0, 1, 4, 9]

    words = await app.module.words.kiq(3)
    assert [item async for item in words.stream()] == ["w0", "w1", "w2"]


async def test_unique_for_sends_once(app: App, workers: Workers) -> None:
    once = app.module.once
    first = await once.kicker().with_task_id("same-id").kiq(1)
    second = await once.kicker().with_task_id("same-id").kiq(2)
    assert second.task_id == first.task_id
    workers.start(app)
    assert (await first.wait_result(timeout=10)).return_value == 1
    await app.broker.wait_all(timeout=10)
    assert numbers(app, "once") == [1]


# -- 7. a global rate limit -------------------------------------------------------------------


async def test_rate_limit_holds_across_worker_processes(app: App, workers: Workers) -> None:
    supervisor = workers.start(app, "--workers", "2", "--max-async-tasks", "2")
    children = await live_children(app, supervisor, 2)
    handles = await app.broker.kiq_many([app.module.limited.s(n) for n in range(15)])
    found = await results(handles, timeout=30)
    assert_succeeded(found)
    starts = sorted(r.return_value[0] for r in found)
    # At most 5 grants in any second: the 6th start after a start is a second later or more
    # (less 0.1 s for the time between the grant and the task's first line).
    gaps = [round(starts[i + 5] - starts[i], 3) for i in range(len(starts) - 5)]
    assert min(gaps) >= 0.9, gaps
    assert starts[-1] - starts[0] >= 1.9  # 15 starts need three windows
    # Each process holds at most 2 tasks for 0.3 s, so both take part.
    assert {int(r.return_value[1]) for r in found} == children


# -- 8. recycling and queue selection -----------------------------------------------------------


async def test_max_tasks_per_child_recycles_the_worker(app: App, workers: Workers) -> None:
    workers.start(app, "--workers", "1", "--max-tasks-per-child", "5")
    handles = await app.broker.kiq_many([app.module.whoami.s() for _ in range(12)])
    found = await results(handles, timeout=30)
    assert_succeeded(found)
    assert all(r.return_value == pid_of(r.worker) for r in found)
    per_child = Counter(r.return_value for r in found)
    assert len(per_child) >= 3
    assert max(per_child.values()) <= 5, per_child


@pytest.mark.timeout(60)
async def test_max_memory_restarts_a_worker_that_grew(app: App, workers: Workers) -> None:
    workers.start(app, "--workers", "1", "--max-memory", "150")
    grown = await (await app.module.hoard.kiq(200)).wait_result(timeout=15)
    assert grown.status is TaskStatus.SUCCEEDED
    deadline = time.monotonic() + 30  # the limit is checked with each heartbeat (5 s)
    while True:
        pid = (await (await app.module.whoami.kiq()).wait_result(timeout=15)).return_value
        if pid != grown.return_value:
            break
        assert time.monotonic() < deadline, "the grown worker was never replaced"
        await asyncio.sleep(0.2)


async def test_queues_option_restricts_consumption(app: App, workers: Workers) -> None:
    workers.start(app, "--queues", "default,extra")
    m = app.module
    other = await m.on_other.kiq()
    plain = await m.add.kiq(1, 2)
    extra = await m.add.kicker().with_queue("extra").kiq(2, 3)
    assert [r.return_value for r in await results([plain, extra])] == [3, 5]
    assert await other.status() is TaskStatus.QUEUED

    workers.start(app, "--queues", "other")
    assert (await other.wait_result(timeout=10)).return_value == "other"


# -- 9. --reload ---------------------------------------------------------------------------------


async def test_reload_restarts_the_worker_on_code_changes(app: App, workers: Workers) -> None:
    supervisor = workers.start(app, "--reload")
    first = await (await app.module.version.kiq()).wait_result(timeout=15)
    assert first.return_value[0] == 1
    old_pid = first.return_value[1]

    source = app.path.read_text()
    assert "VERSION = 1  #" in source
    app.path.write_text(source.replace("VERSION = 1  #", "VERSION = 22  #"))

    deadline = time.monotonic() + 30
    while True:
        result = await (await app.module.version.kiq()).wait_result(timeout=20)
        assert result.status is TaskStatus.SUCCEEDED
        if result.return_value[0] == 22:
            break
        assert time.monotonic() < deadline, "the worker never ran the changed code"
        await asyncio.sleep(0.1)  # the old child may still answer: ask again
    assert result.return_value[1] != old_pid
    assert old_pid not in supervisor.child_pids()
    assert supervisor.proc.poll() is None


# -- 10. JSON logs ----------------------------------------------------------------------------


async def test_json_log_lines_carry_task_fields(app: App, workers: Workers) -> None:
    worker = workers.start(app, "--log-format", "json", "--workers", "2")
    ok = await app.module.add.kiq(1, 2)
    bad = await app.module.boom.kiq()
    await results([ok, bad])
    assert worker.terminate(timeout=10) == 0

    lines = [line for line in worker.stderr().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert {"conveyor.supervisor", "conveyor.worker"} <= {r["logger"] for r in records}
    for handle, name in ((ok, app.module.add.name), (bad, app.module.boom.name)):
        mine = [r for r in records if r.get("task_id") == handle.task_id]
        assert mine, f"no log line for {name}"
        assert all(r["task_name"] == name for r in mine)
        assert any(r["message"].startswith("started") for r in mine)
    ends = {r["level"] for r in records if r.get("task_id") == bad.task_id}
    assert "ERROR" in ends
