"""`conveyor worker` takes `taskiq worker`'s options: those with a meaning here work, the others
are refused in one line that says why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.cli import main
from conveyor.worker import supervisor as supervisor_module
from conveyor.worker.supervisor import Supervisor

APP = """
import os
from conveyor import SqliteBroker

broker = SqliteBroker(os.path.join(os.path.dirname(__file__), "app.db"))
"""

JOBS = """
import os
from app import broker


@broker.task
def where(n: int) -> dict:
    return {"pid": os.getpid(), "n": n, "type": type(n).__name__}
"""


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--ack-type", "when_received"], "--ack-type 'when_received' has no conveyor form"),
        (["--receiver", "my:Receiver"], "no pluggable receiver"),
        (["--receiver_arg", "a=1"], "--receiver_arg ('a=1',) has no conveyor form"),
        (["--no-propagate-errors"], "always reaches its generator dependencies"),
        (["--max-prefetch", "10"], "up to its free capacity"),
        (["--hardkill-count", "3"], "the second SIGINT/SIGTERM stops"),
    ],
)
def test_options_without_a_meaning_here_are_refused_saying_why(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "no_such_module:broker", *argv])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_taskiqs_worker_command_line_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "app.py").write_text(APP)
    (project / "jobs" / "cpu_jobs.py").write_text(JOBS)
    argv = [sys.executable, "-m", "conveyor", "worker", "app:broker", "-fsd"]
    argv += ["--app-dir", "project", "--tasks-pattern", "**/*_jobs.py"]
    argv += ["--max-threadpool-threads", "2", "--wait-tasks-timeout", "5", "--no-parse"]
    argv += ["--use-process-pool", "--max-process-pool-processes", "1"]
    argv += ["--ack-type", "when_saved", "--max-prefetch", "0", "--hardkill-count", "2"]
    argv += ["--do-not-use-gitignore", "--log-format", "%(levelname)s|%(name)s|%(message)s"]
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(argv, cwd=tmp_path, stderr=log)
    send = [sys.executable, "-m", "conveyor", "send", "app:broker", "jobs.cpu_jobs:where"]
    sent = subprocess.run(
        [*send, "--args", '["7"]', "--wait"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=20)
    log_text = (tmp_path / "worker.log").read_text()
    assert sent.returncode == 0, sent.stderr + log_text
    assert '"type": "str"' in sent.stdout  # --no-parse: "7" stays a string
    assert f'"pid": {worker.pid}' not in sent.stdout  # --use-process-pool: another process
    assert "INFO|conveyor.worker|started jobs.cpu_jobs:where" in log_text
    assert worker.returncode == 0


class _Dies:
    """A worker process that has died with code 1."""

    pid = os.getpid()

    def exitcode(self) -> int:
        return 1

    def signal(self, sig: int) -> None:
        pass


def test_max_fails_stops_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(supervisor_module, "FAST_DEATH_SECONDS", 0.0)  # no crash-loop backoff
    spawned: list[_Dies] = []

    def spawn() -> _Dies:
        spawned.append(_Dies())
        return spawned[-1]

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = Supervisor(spawn, 1, max_fails=2).run()  # in the main thread: it sets handlers
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 1
    assert len(spawned) == 3  # the first and two restarts; the third death is one too many
