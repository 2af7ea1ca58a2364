"""`python main.py` just works: a worker and a producer on the default SQLite file in the cwd."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

MAIN = Path(__file__).parents[2] / "examples" / "quickstart" / "main.py"


def run_main_py(tmp_path: Path) -> tuple[str, int]:
    """Start `python main.py` (a worker), run `python main.py send`, then SIGTERM the worker.

    Returns what `send` printed and the worker's pid; asserts both ended cleanly.
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
    return sent.stdout, worker.pid


@pytest.mark.timeout(60)
def test_python_main_py_runs_a_worker_and_a_producer(tmp_path: Path) -> None:
    shutil.copy(MAIN, tmp_path / "main.py")
    printed, _ = run_main_py(tmp_path)
    assert printed.strip() == "3"
    assert (tmp_path / "conveyor.db").exists()


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
    printed, supervisor_pid = run_main_py(tmp_path)
    names, pids = (line.split() for line in printed.splitlines())
    assert len(pids) == 2  # both forked workers took part
    assert str(supervisor_pid) not in pids
    assert sorted(name.rsplit(":", 1)[1] for name in names) == sorted(pids)
