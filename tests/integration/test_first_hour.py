"""A new user's first hour (issue 19), through real `conveyor` subprocesses: the README's first
example works as written, a worker says what it serves and warns about queues nobody consumes,
`send --wait` and `result` show progress, destructive commands ask on a terminal, `--traceback`
shows the whole traceback, and every read command takes `--json`.

The error lines of wrong names, wrong argument types and import errors are cases of
`test_cli.MISTAKES`; `inspect active` within a second of a task's start is in `test_cli`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import SqliteBroker
from tests.integration.test_cli import Cli, Worker, make_cli, run_all, wait_until, worker_name

pytestmark = pytest.mark.slow

README = Path(__file__).parents[2] / "README.md"

#: Tasks on the default queue, on another queue, reporting progress, and failing.
APP = '''
import asyncio
from pathlib import Path

from conveyor import Context, Depends, broker_from_url

broker = broker_from_url()


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task("report", queue="reports")
async def report(n: int = 0) -> int:
    return n


@broker.task
async def steps(flag: str, context: Context = Depends()) -> str:
    """Reports its stage, then waits until the file `flag` exists."""
    await context.set_progress({"stage": "waiting"})
    while not Path(flag).exists():
        await asyncio.sleep(0.02)
    return "done"
'''


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """`test_cli`'s directory and environment, with this module's `app.py`."""
    for name in [name for name in os.environ if name.startswith("CONVEYOR_")]:
        monkeypatch.delenv(name)
    made = make_cli(tmp_path)
    (tmp_path / "app.py").write_text(APP)
    try:
        yield made
    finally:
        for worker in made.workers:
            worker.stop()


# -- item 1 and 7: the README's first example, a relative SQLite URL ------------------------------


def readme_first_task() -> tuple[str, list[str], list[list[str]]]:
    """The README's first example: `main.py`, its worker command, and its send commands."""
    text = README.read_text()
    section = text[text.index("## A first task") :]
    section = section[: section.index("\n## ", 4)]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    worker = re.findall(r"`(conveyor worker main:broker[^`]*)`", section)
    sends = re.findall(r"`(conveyor send main:broker [^`]*--wait)`", section)
    assert len(worker) == 1, worker
    assert len(sends) == 2, sends
    return code.group(1), shlex.split(worker[0]), [shlex.split(send) for send in sends]


def test_the_readme_first_example_works_as_written(tmp_path: Path) -> None:
    main, worker_argv, sends = readme_first_task()
    (tmp_path / "main.py").write_text(main)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    cli = Cli(tmp_path, env)  # no CONVEYOR_BROKER_URL: the default, relative sqlite:///conveyor.db
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", *worker_argv[1:]],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(proc, log)
    try:
        worker.wait_for_log("task(s): ")
        banner = worker.output()
        db = tmp_path / "conveyor.db"
        assert f" consuming default,emails on sqlite:///conveyor.db (file {db})\n" in banner
        assert "2 task(s): emails.send [emails], main:add\n" in banner
        assert "not consumed" not in banner
        assert f"SqliteBroker sqlite:///conveyor.db (the file {db})\n" in cli.ok(
            "info", "main:broker"
        )

        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            " ".join(argv): (argv[1:], {}) for argv in sends
        }
        runs = run_all(cli, commands)
        for command, done in runs.items():
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            assert done.stderr == "", (command, done.stderr)  # no warning: a worker consumes it
            assert "status: succeeded\n" in done.stdout, (command, done.stdout)
        assert "result: 3\n" in runs[" ".join(sends[0])].stdout
    finally:
        assert worker.stop() == 0


# -- item 1: queues nobody consumes ----------------------------------------------------------------


def test_a_worker_and_send_wait_say_when_a_queue_has_no_consumer(cli: Cli) -> None:
    worker = cli.start_worker("--queues", "default")
    shown = worker.output()
    assert "3 task(s): app:add, app:steps, report [reports]\n" in shown
    assert (
        "WARNING conveyor.worker: queue 'reports' (report) is not consumed by this worker: its "
        "tasks wait for a worker that consumes it (--queues default,reports)\n"
    ) in shown

    done = cli.run("send", "app:broker", "report", "--wait", "--timeout", "1.8")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "conveyor: warning: no live worker consumes queue 'reports' "
        "(live workers consume default); start one with --queues reports"
    ), lines
    assert lines[1].endswith("did not finish within 1.8 s"), lines


# -- item 6: progress -----------------------------------------------------------------------------


async def progress_of(db: Path, task_id: str, timeout: float = 20.0) -> object:
    """Poll a task's progress from this process until it has one."""
    deadline = time.monotonic() + timeout
    async with SqliteBroker(str(db)) as broker:
        while (progress := await broker.get_progress(task_id)) is None:
            assert time.monotonic() < deadline, f"{task_id} reported no progress"
            await asyncio.sleep(0.02)
    return progress


def test_send_wait_and_result_show_progress(cli: Cli) -> None:
    cli.start_worker()
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "send",
            "app:broker",
            "app:steps",
            "--args",
            '["go"]',
            "--wait",
        ],
        cwd=cli.root,
        env=cli.environ(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        task_id = waiting.stdout.readline().strip()
        assert asyncio.run(progress_of(cli.db, task_id)) == {"stage": "waiting"}
        assert cli.result(task_id) == 'status: running\nprogress: {"stage": "waiting"}\n'
        shown = json.loads(cli.ok("result", "app:broker", task_id, "--json"))
        assert shown == {
            "task_id": task_id,
            "status": "running",
            "progress": {"stage": "waiting"},
            "result": None,
        }
        (cli.root / "go").touch()
        out, err = waiting.communicate(timeout=20)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, err
    assert out.startswith('status: succeeded\nresult: "done"\n'), out
    assert err == 'progress: {"stage": "waiting"}\n'


# -- item 5: destructive commands ask on a terminal ------------------------------------------------


def on_terminal(cli: Cli, args: list[str], answer: str | None) -> tuple[int, str]:
    """Run `conveyor *args` with a pseudo-terminal as stdin, stdout and stderr; type `answer`
    when it asks `[y/N]` (None: it must not ask). Returns the exit code and all it printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cli.root,
        env=cli.environ(None),
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    shown, deadline = b"", time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.1)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            shown += chunk
            if b"[y/N]" in shown and answer is not None:
                os.write(master, f"{answer}\n".encode())
                answer = None
        code = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, shown.decode(errors="replace").replace("\r\n", "\n")


def test_purge_and_requeue_ask_first_on_a_terminal(cli: Cli) -> None:
    for n in range(2):
        cli.send("app:add", "--args", f"[{n}, 1]")
    url = f"sqlite:///{cli.db}"
    code, shown = on_terminal(cli, ["purge", "app:broker"], "n")
    assert code == 1, shown
    assert f"Delete 2 waiting message(s) of every queue on {url}? [y/N]: n\n" in shown, shown
    assert shown.endswith("nothing purged\n"), shown
    assert cli.ok("inspect", "queues", "app:broker") == "default: 2 ready, 0 scheduled, 0 running\n"

    code, shown = on_terminal(cli, ["purge", "app:broker", "--queue", "default"], "y")
    assert (code, shown.splitlines()[-1]) == (0, "purged 2 message(s)"), shown
    cli.send("app:add", "--args", "[1, 1]")
    assert on_terminal(cli, ["purge", "app:broker", "--yes"], None) == (0, "purged 1 message(s)\n")
    assert cli.ok("purge", "app:broker") == "purged 0 message(s)\n"  # no terminal: no question

    asyncio.run(dead_letter(cli.db, "letter-1"))
    code, shown = on_terminal(cli, ["dlq", "requeue", "app:broker"], "")  # Enter: the default, no
    assert code == 1, shown
    assert f"Send every dead letter back to its queue on {url}, to run again? [y/N]: \n" in shown
    assert cli.ok("dlq", "list", "app:broker").startswith("letter-1 app:add queue=default ")
    assert on_terminal(cli, ["dlq", "requeue", "app:broker", "-y"], None) == (
        0,
        "requeued 1 message(s)\n",
    )


async def dead_letter(db: Path, task_id: str) -> None:
    """Put a message of `app:add` in the dead-letter queue, as a worker that gave up would."""
    async with SqliteBroker(str(db)) as broker:
        message = broker.build_message("app:add", [1, 2], {}, None, None, task_id)
        await broker.transport.publish([broker.outgoing(message)])
        (delivery,) = await broker.transport.receive(["default"], 1, 5.0)
        await broker.transport.dead_letter(delivery, "RuntimeError: gave up")


# -- item 4: --traceback --------------------------------------------------------------------------


def test_traceback_shows_the_whole_traceback_of_an_error(cli: Cli) -> None:
    runs = run_all(
        cli,
        {
            "after": (["info", "boom:broker", "--traceback"], {}),
            "before": (["--traceback", "worker", "boom:broker"], {}),
        },
    )
    for done in runs.values():
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("Traceback (most recent call last):\n"), done.stderr
        assert re.search(r'File ".*boom\.py", line 1, in <module>', done.stderr), done.stderr
        assert "RuntimeError: kaboom" in done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith("conveyor: error: importing 'boom' failed: RuntimeError: "), last


# -- item 9: every read command takes --json -------------------------------------------------------

READS = {
    "info": ["info", "app:broker"],
    "tasks": ["inspect", "tasks", "app:broker"],
    "queues": ["inspect", "queues", "app:broker"],
    "workers": ["inspect", "workers", "app:broker"],
    "active": ["inspect", "active", "app:broker"],
    "schedules": ["inspect", "schedules", "app:broker"],
    "dlq": ["dlq", "list", "app:broker"],
    "ping": ["ping", "app:broker"],
}


def test_every_read_command_takes_json(cli: Cli) -> None:
    worker = cli.start_worker()
    name = worker_name(worker.pid)
    task_id = cli.send("app:steps", "--args", '["go"]')
    cli.wait_status(task_id, "running")
    wait_until(
        lambda: task_id in cli.ok("inspect", "active", "app:broker"), "the task in a heartbeat"
    )
    runs = run_all(cli, {key: ([*args, "--json"], {}) for key, args in READS.items()})
    runs["result"] = cli.run("result", "app:broker", task_id, "--json")
    shown = {}
    for key, done in runs.items():
        assert done.returncode == 0, (key, done.stderr)
        shown[key] = json.loads(done.stdout)

    info = shown["info"]
    assert (info["broker"], info["url"], info["file"]) == (
        "SqliteBroker",
        f"sqlite:///{cli.db}",
        str(cli.db),
    )
    assert {t["name"]: t["queue"] for t in info["tasks"]}["report"] == "reports"
    assert info["queues"] == shown["queues"]
    assert shown["queues"] == [{"name": "default", "ready": 0, "scheduled": 0, "running": 1}]
    assert [t["name"] for t in shown["tasks"]] == [t["name"] for t in info["tasks"]]
    (beat,) = shown["workers"]
    assert (beat["name"], beat["running"], beat["running_names"]) == (
        name,
        [task_id],
        ["app:steps"],
    )
    assert shown["active"] == [{"worker": name, "task_id": task_id, "task_name": "app:steps"}]
    assert (shown["schedules"], shown["dlq"]) == ([], [])
    assert (shown["ping"]["broker"], shown["ping"]["worker"]) == (f"sqlite:///{cli.db}", name)
    assert shown["ping"]["round_trip_ms"] > 0
    assert shown["result"]["status"] == "running"
    (cli.root / "go").touch()
    cli.wait_status(task_id, "succeeded")
    done = json.loads(cli.ok("result", "app:broker", task_id, "--json"))
    assert (done["status"], done["result"]["return_value"]) == ("succeeded", "done")
