"""`python main.py` just works: a worker and a producer on the default SQLite file in the cwd."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MAIN = Path(__file__).parents[2] / "examples" / "quickstart" / "main.py"


def run_main_py(tmp_path: Path) -> tuple[str, int, str]:
    """Start `python main.py` (a worker), run `python main.py send`, then SIGTERM the worker.

    Returns what `send` printed, the worker's pid and what it logged; asserts both ended
    cleanly.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    worker = subprocess.Popen(
        [sys.executable, "main.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        sent = subprocess.run(
            [sys.executable, "main.py", "send"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=40)
    assert sent.returncode == 0, sent.stderr
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr
    return sent.stdout, worker.pid, stderr


@pytest.mark.timeout(60)
def test_python_main_py_runs_a_worker_and_a_producer(tmp_path: Path) -> None:
    shutil.copy(MAIN, tmp_path / "main.py")
    printed, pid, logged = run_main_py(tmp_path)
    assert printed.strip() == "3"
    assert (tmp_path / "conveyor.db").exists()
    # The banner, as the CLI's worker logs it: where (the file's absolute path) and what.
    db = tmp_path / "conveyor.db"
    banner = f" consuming default on sqlite:///conveyor.db (file {db})\n"
    assert re.search(rf"INFO    conveyor.worker: worker \S+:{pid}{re.escape(banner)}", logged)
    assert "INFO    conveyor.worker: 1 task(s): main:add\n" in logged


FORKED = """
import asyncio, os, sys
from conveyor import broker_from_url

broker = broker_from_url()

@broker.task
async def whoami() -> int:
    await asyncio.sleep(0.05)
    return os.getpid()

async def send() -> None:
    handles = await broker.kiq_many([whoami.s() for _ in range(40)])
    results = [await h.wait_result(timeout=30) for h in handles]
    print(" ".join(sorted({r.worker or "" for r in results})))
    print(" ".join(sorted({str(r.return_value) for r in results})))

if __name__ == "__main__":
    if sys.argv[1:] == ["send"]:
        asyncio.run(send())
    else:
        broker.run(workers=2, max_async_tasks=2)
"""


@pytest.mark.timeout(60)
def test_broker_run_with_two_forked_workers(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(FORKED)
    printed, supervisor_pid, _ = run_main_py(tmp_path)
    names, pids = (line.split() for line in printed.splitlines())
    assert len(pids) == 2  # both forked workers took part
    assert str(supervisor_pid) not in pids
    assert sorted(name.rsplit(":", 1)[1] for name in names) == sorted(pids)


LEVELLED = """
import sys
from conveyor import broker_from_url

broker = broker_from_url()

@broker.task
async def add(x: int, y: int) -> int:
    return x + y

@broker.task(queue="emails")
def send_email(to: str) -> None: ...

if __name__ == "__main__":
    broker.run(log_level=sys.argv[1])
"""


@pytest.mark.timeout(60)
def test_broker_run_takes_a_log_level_and_fails_in_one_line(tmp_path: Path) -> None:
    """`broker.run(log_level=...)` sets what is logged (here: warnings only, so the banner is
    left out and the warning about the queue it does not consume is shown); a broker that
    cannot be opened is one line and exit code 2, as in the CLI."""
    (tmp_path / "main.py").write_text(LEVELLED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    failed = subprocess.run(
        [sys.executable, "main.py", "INFO"],
        cwd=tmp_path,
        env={**env, "CONVEYOR_BROKER_URL": "sqlite:////proc/nope/x.db"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert failed.returncode == 2, failed.stderr
    (line,) = failed.stderr.splitlines()
    assert line.startswith("conveyor: error: cannot open SQLite database '/proc/nope/x.db'")

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "main.py", "WARNING"], cwd=tmp_path, env=env, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while "not consumed" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()
    (line,) = log.read_text().splitlines()
    assert line.endswith(
        "WARNING conveyor.worker: queue 'emails' (main:send_email) is not consumed by this "
        "worker: its tasks wait for a worker that consumes it (--queues default,emails)"
    ), line
