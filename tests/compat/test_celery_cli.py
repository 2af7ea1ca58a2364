"""`conveyor worker` takes the `celery worker` options whose meaning is the same here (`-Q`,
`-l`/`--loglevel`, `-B`/`--beat`) and refuses `-c`/`--concurrency`, which has none, in one line
that names both of conveyor's options."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.cli import main

APP = """
import os
from conveyor import SqliteBroker

broker = SqliteBroker(os.path.join(os.path.dirname(__file__), "app.db"))


@broker.task(queue="emails")
def send_email(to: str) -> str:
    return f"sent to {to}"


@broker.task(queue="emails", schedule=[{"interval": 0.2}])
def tick() -> None:
    with open(os.path.join(os.path.dirname(__file__), "ticks"), "a") as ticks:
        ticks.write("tick\\n")
"""


def test_concurrency_is_refused_naming_what_to_say_instead(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "no_such_module:broker", "-c", "8"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "-w/--workers" in err
    assert "--max-async-tasks" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_celerys_worker_command_line_runs(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    argv = [sys.executable, "-m", "conveyor", "worker", "app:broker"]
    argv += ["-Q", "emails", "-l", "WARNING", "-B"]
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(argv, cwd=tmp_path, stderr=log)
    try:
        send = [sys.executable, "-m", "conveyor", "send", "app:broker", "app:send_email"]
        sent = subprocess.run(
            [*send, "--args", '["ada@example.com"]', "--wait", "--timeout", "30"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert "sent to ada@example.com" in sent.stdout  # consumed from -Q emails
        ticks = tmp_path / "ticks"
        deadline = time.monotonic() + 20
        while not (ticks.exists() and len(ticks.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline, "-B ran no scheduler"
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)  # polling a file the task writes; the tick runs every 0.2 s
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
    assert "INFO" not in (tmp_path / "worker.log").read_text()  # -l WARNING
