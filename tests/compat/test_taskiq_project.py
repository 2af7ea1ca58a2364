"""A FastAPI + Taskiq project (`taskiq_project/`: an app, a broker module with a Redis result
backend and schedule source, a tasks module, and its own tests), whose imports alone were
changed: its tests pass, and it runs with a worker and a scheduler started from the CLI."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.servers import drop_prefix, redis_url, unique_prefix

PROJECT = Path(__file__).parent / "taskiq_project"


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PYTEST_"))}
    return {**clean, **extra}


def test_the_projects_own_tests_pass(tmp_path: Path) -> None:
    shutil.copytree(PROJECT, tmp_path / "svc")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "project_tests"],
        cwd=tmp_path / "svc",
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The project in a directory of its own, importable here, its keys dropped after."""
    url, prefix = redis_url(), unique_prefix()
    root = tmp_path / "svc"
    shutil.copytree(PROJECT, root)
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("QUEUE_NAME", prefix)
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "project" or m.startswith("project.")]:
        monkeypatch.delitem(sys.modules, name)
    yield root
    drop_prefix(url, prefix)
    drop_prefix(url, f"{prefix}-results")


@pytest.fixture
def processes(service: Path) -> Iterator[list[str]]:
    """A worker and a scheduler of the project, started from the CLI, and checked when they
    are stopped: both exit cleanly, and the worker ran the scheduled task."""
    env = _env(REDIS_URL=os.environ["REDIS_URL"], QUEUE_NAME=os.environ["QUEUE_NAME"])
    started: list[subprocess.Popen[bytes]] = []
    logs: list[str] = []
    for command, target in (("worker", "broker"), ("scheduler", "scheduler")):
        with (service / f"{command}.log").open("w") as log:  # not a pipe: nobody reads it yet
            argv = [sys.executable, "-m", "conveyor", command, f"project.broker:{target}"]
            started.append(
                subprocess.Popen([*argv, "project.tasks"], cwd=service, env=env, stderr=log)
            )
    try:
        yield logs
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
    logs += [(service / f"{name}.log").read_text() for name in ("worker", "scheduler")]
    assert [process.returncode for process in started] == [0, 0], logs
    assert not any("Traceback" in log for log in logs), logs
    assert "started project.tick" in logs[0]


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_worker_and_a_scheduler_from_the_cli_run_the_project(
    processes: list[str],
) -> None:
    await _use_the_api()


async def _use_the_api() -> None:
    tasks = importlib.import_module("project.tasks")  # the copy in this test's directory
    app = importlib.import_module("project.app").app
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://svc") as client,
    ):
        saved = (await client.post("/items", json={"key": "a", "value": 5})).json()
        assert (await client.get(f"/results/{saved['task_id']}")).json()["value"] == 5
        assert (await client.get("/items/a")).json() == 5  # the worker's app state
        failed = (await client.post("/items", json={"key": "b", "value": -1})).json()
        error = (await client.get(f"/results/{failed['task_id']}")).json()
        assert (error["is_err"], error["error"]) == (True, "b: negative value -1")
        assert (await client.get("/items/b")).json() is None  # rolled back
        who = await (await tasks.who.kiq()).wait_result(timeout=10)
        assert who.return_value == {"worker": True, "attempt": 1}
        at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        created = (await client.post("/schedules", json={"name": "soon", "at": at})).json()
        assert created["schedule_id"]
        deadline = time.monotonic() + 15
        while (await client.get("/items/tick:soon")).json() is not True:
            assert time.monotonic() < deadline, "the scheduled run never came"
            await asyncio.sleep(0.05)
        await client.delete(f"/schedules/{created['schedule_id']}")
