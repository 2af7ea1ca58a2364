"""Workflows across real worker processes (`conveyor worker --workers 2`) on SQLite and Redis:
a SIGKILL in the middle of a chord delays it but the final result is right; a failing step's
error is the workflow's error and nothing after it runs.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conveyor import TaskStatus, chain, chord, group
from tests.integration.flows import ENGINES, flow_app
from tests.integration.test_worker_processes import eventually

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, WorkerProcess, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(params=ENGINES)
async def flow(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[App]:
    async with flow_app(request.param, tmp_path, monkeypatch) as app:
        yield app


async def two_workers(flow: App, workers: Workers) -> WorkerProcess:
    """A supervisor with two worker processes, both consuming."""
    supervisor = workers.start(flow, "--workers", "2", "--max-async-tasks", "3")

    async def both_beating() -> bool:
        pids = {beat.pid for beat in await flow.broker.state.heartbeats()}
        return len(supervisor.child_pids() & pids) == 2

    await eventually(both_beating, 15, "two worker processes heartbeating")
    return supervisor


def just_started(flow: App) -> list[int]:
    """Pids running a step that started less than 0.15 s ago (it sleeps 0.4 s): one to kill."""
    done = {fields[0] for fields in flow.marks("done")}
    now = time.time()
    return [
        int(f[1]) for f in flow.marks("started") if f[0] not in done and now - float(f[2]) < 0.15
    ]


async def test_a_chord_survives_a_sigkill_in_its_middle(flow: App, workers: Workers) -> None:
    supervisor = await two_workers(flow, workers)
    m = flow.module
    header = group(m.slow_add.s(i, i) for i in range(12))
    handle = await chain(chord(header, m.total.s()), m.slow_add.s(1000)).kiq()

    def some_done_some_running() -> bool:
        return len(flow.marks("done")) >= 2 and bool(just_started(flow))

    await eventually(some_done_some_running, 15, "a first wave done and a second running")
    victim = just_started(flow)[0]
    assert victim in supervisor.child_pids()
    os.kill(victim, signal.SIGKILL)

    result = await handle.wait_result(timeout=30)
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.return_value == sum(2 * i for i in range(12)) + 1000
    started = Counter(fields[0] for fields in flow.marks("started"))
    assert any(count > 1 for count in started.values())  # a killed step ran again
    assert len(flow.marks("total")) == 1  # the chord's body ran once
    assert {int(f[1]) for f in flow.marks("started")} - {victim}  # others did work too


async def test_a_failing_step_is_the_workflows_error(flow: App, workers: Workers) -> None:
    await two_workers(flow, workers)
    m = flow.module
    failing_chain = await chain(m.slow_add.s(1, 2), m.fail.s(), m.total.s()).kiq()
    failing_chord = await chord([m.slow_add.s(1, 1), m.fail.si(5)], m.total.s()).kiq()
    for handle, message in ((failing_chain, "cannot use 3"), (failing_chord, "cannot use 5")):
        result = await handle.wait_result(timeout=20)
        assert result.status is TaskStatus.FAILED
        assert (result.error_type, result.error_message) == ("ValueError", message)
        assert result.labels["failed_task"] == m.fail.name
    await flow.broker.wait_all(timeout=10)
    assert flow.marks("total") == []  # nothing after the failure ran
