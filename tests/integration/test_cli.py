"""The `conveyor` command line (SPEC §7, §9), run as real subprocesses on a temporary SQLite file.

Each test writes an `app.py` into its own directory, points `CONVEYOR_BROKER_URL` at a file
there, and runs `python -m conveyor ...` in that directory. Workers are subprocesses started
by the `cli` fixture and stopped by pid (SIGTERM, then SIGKILL) when the test ends. Tests wait on
output and results, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import click
import psutil
import pytest

import conveyor
import conveyor.inspector
from conveyor import SqliteBroker, TaskStatus

pytestmark = pytest.mark.slow

T = TypeVar("T")

#: The application every test runs: tasks on `broker = broker_from_url()`.
APP = '''
import asyncio
import os
from pathlib import Path

from conveyor import broker_from_url

broker = broker_from_url()


@broker.task("add")
async def add(x: int, y: int) -> int:
    return x + y


@broker.task("pid")
def pid() -> int:
    """The worker process's pid: proves which process ran a task."""
    return os.getpid()


@broker.task("report", queue="reports")
async def report(n: int = 0) -> int:
    return n


@broker.task("hold")
async def hold(flag: str) -> str:
    """Runs until the file `flag` exists."""
    while not Path(flag).exists():
        await asyncio.sleep(0.02)
    return "released"


@broker.task
async def shout(text: str) -> str:
    """Registered under its default name, app:shout."""
    return text.upper()


@broker.task("fragile")
def fragile(name: str) -> str:
    """Fails until the file `fixed` exists."""
    if not Path("fixed").exists():
        raise RuntimeError(f"{name} is not fixed yet")
    return f"{name} fixed"
'''

#: A producer that knows no task: what it sends is checked only by the worker.
PRODUCER = "from conveyor import broker_from_url\n\nbroker = broker_from_url()\n"

#: Modules the error cases import.
BAD_MODULES = {
    "boom.py": "raise RuntimeError('kaboom\\n  at import')\n",  # a two-line message
    "importsboom.py": "VALUE = 1\nimport boom  # noqa\n",
    "broken.py": "def oops(:\n",
    "needsdep.py": "import nosuchdependency  # noqa\n",
    "empty.py": "VALUE = 1\n",
}


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """Assert SPEC §7's failure shape: exit code 2, one line on stderr, no traceback."""
    shown = f"stdout={done.stdout!r} stderr={done.stderr!r}"
    assert done.returncode == 2, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    return lines[0]


@dataclass
class Worker:
    """A `conveyor worker` subprocess and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The worker process's pid."""
        return self.proc.pid

    def output(self) -> str:
        """Everything it logged so far."""
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        """Wait until `text` is in the log; fail at once if the process died."""

        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            return text in self.output()

        wait_until(seen, f"{text!r} in the worker's log", timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@dataclass
class Cli:
    """Runs `python -m conveyor` in a test directory holding `app.py`."""

    root: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    @property
    def db(self) -> Path:
        """The SQLite file of `CONVEYOR_BROKER_URL`."""
        return self.root / "q.db"

    def environ(self, extra: dict[str, str] | None) -> dict[str, str]:
        """The subprocess environment: `env` with `extra`; an empty value removes a variable."""
        merged = {**self.env, **(extra or {})}
        return {k: v for k, v in merged.items() if v}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run one command to its end."""
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.root,
            env=self.environ(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run a command that must succeed quietly; return its stdout."""
        done = self.run(*args, env=env)
        assert done.returncode == 0, f"stdout={done.stdout!r} stderr={done.stderr!r}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def send(self, *args: str, env: dict[str, str] | None = None, app: str = "app:broker") -> str:
        """`conveyor send APP ...` without --wait; return the task id it prints."""
        task_id = self.ok("send", app, *args, env=env).strip()
        assert re.fullmatch(r"[0-9a-f]{32}", task_id), task_id
        return task_id

    def result(self, task_id: str, env: dict[str, str] | None = None) -> str:
        """`conveyor result`'s output for `task_id`."""
        return self.ok("result", "app:broker", task_id, env=env)

    def wait_result(
        self, task_id: str, status: str, env: dict[str, str] | None = None, timeout: float = 20.0
    ) -> str:
        """Wait until the task has `status`, then return what `conveyor result` shows.

        The wait polls the result store from this process (a subprocess per poll is slow).
        """
        self.wait_status(task_id, status, timeout)
        shown = self.result(task_id, env)
        assert f"status: {status}\n" in shown, shown
        return shown

    def wait_status(
        self, task_id: str, status: str, timeout: float = 20.0, key: str | None = None
    ) -> None:
        """Poll the result store from this process until the task has `status` (results
        signed with `key` when the workers have one)."""
        asyncio.run(self._wait_status(task_id, TaskStatus(status), timeout, key))

    async def _wait_status(
        self, task_id: str, status: TaskStatus, timeout: float, key: str | None
    ) -> None:
        broker = SqliteBroker(str(self.db), secret_key=key or "")
        deadline = time.monotonic() + timeout
        async with broker:
            handle = broker.get_handle(task_id)
            while (seen := await handle.status()) is not status:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"task {task_id} is {seen}, not {status}, after {timeout} s"
                    )
                await asyncio.sleep(0.02)

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> Worker:
        """Start `conveyor worker app:broker` and wait until it consumes."""
        log = self.root / f"worker-{len(self.workers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "conveyor",
                    "worker",
                    "app:broker",
                    "--queues",
                    "default,reports",
                    "--shutdown-timeout",
                    "2",
                    *args,
                ],
                cwd=self.root,
                env=self.environ(env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        self.workers.append(worker)
        worker.wait_for_log(" consuming ")
        return worker


def make_cli(root: Path) -> Cli:
    """Write `app.py` and the other modules into `root`; a clean `CONVEYOR_*` environment."""
    (root / "app.py").write_text(APP)
    (root / "producer.py").write_text(PRODUCER)
    for name, text in BAD_MODULES.items():
        (root / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_BROKER_URL"] = f"sqlite:///{root / 'q.db'}?lease=2"
    env["COLUMNS"] = "200"  # rich (the demo) wraps at 80 columns when not on a terminal
    env.pop("PYTHONPATH", None)
    return Cli(root, env)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """A directory with `app.py`, a clean environment and every worker stopped at the end."""
    for name in [name for name in os.environ if name.startswith("CONVEYOR_")]:
        monkeypatch.delenv(name)  # brokers made in the test's process see what workers see
    made = make_cli(tmp_path)
    try:
        yield made
    finally:
        for worker in made.workers:
            worker.stop()


def run_all(
    cli: Cli, commands: dict[str, tuple[list[str], dict[str, str]]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run independent commands (no worker, no shared state) a few at a time, by id."""
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        futures = {
            key: pool.submit(cli.run, *args, env=env) for key, (args, env) in commands.items()
        }
        return {key: future.result() for key, future in futures.items()}


def worker_name(pid: int) -> str:
    """The name a worker on this host with `pid` reports (`host:pid`)."""
    return f"{socket.gethostname()}:{pid}"


# -- 1. the commands ----------------------------------------------------------------------------


def test_version(cli: Cli) -> None:
    assert cli.ok("--version").strip() == f"conveyor, version {conveyor.__version__}"


def test_the_conveyor_script_is_installed(cli: Cli) -> None:
    script = Path(sys.executable).parent / "conveyor"
    done = subprocess.run(
        [str(script), "--version"],
        cwd=cli.root,
        env=cli.environ(None),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert conveyor.__version__ in done.stdout


HELP_COMMANDS = [
    [],
    ["worker"],
    ["info"],
    ["ping"],
    ["send"],
    ["result"],
    ["inspect"],
    ["purge"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "requeue"],
    ["demo"],
]


@pytest.fixture(scope="module")
def help_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`conveyor ... --help` of every command, run side by side once for the module."""
    cli = make_cli(tmp_path_factory.mktemp("help"))
    return run_all(cli, {" ".join(c): ([*c, "--help"], {}) for c in HELP_COMMANDS})


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: "-".join(c) or "conveyor")
def test_help_of_every_command(
    help_runs: dict[str, subprocess.CompletedProcess[str]], command: list[str]
) -> None:
    done = help_runs[" ".join(command)]
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"Usage: conveyor {' '.join(command)}".rstrip() + " ")
    assert "-h, --help" in done.stdout


def test_every_option_of_every_command_says_what_it_does() -> None:
    from conveyor.cli.commands import cli as group

    def options(command: click.Command, path: str) -> Iterator[tuple[str, click.Option]]:
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                yield path, param
        for name, sub in getattr(command, "commands", {}).items():
            yield from options(sub, f"{path} {name}")

    found = list(options(group, "conveyor"))
    assert len(found) > 40
    assert [(path, option.opts) for path, option in found if not option.help] == []


def test_top_level_help_lists_the_commands(cli: Cli) -> None:
    shown = cli.ok("-h")
    for command in ("worker", "info", "ping", "inspect", "purge", "send", "result", "dlq", "demo"):
        assert re.search(rf"^\s+{command}\s", shown, re.MULTILINE), (command, shown)


def test_info_shows_broker_tasks_and_queues(cli: Cli) -> None:
    shown = cli.ok("info", "app:broker")
    assert f"broker:   SqliteBroker sqlite:///{cli.db}\n" in shown
    assert "results:  SqliteResultBackend\n" in shown
    assert "format:   json\n" in shown
    assert "  add(x: int, y: int) \n" in shown
    assert "  report(n: int = 0) {'queue': 'reports'}\n" in shown
    assert "  conveyor:ping() \n" in shown
    assert shown.endswith("queues:   (empty)\n")

    cli.send("add", "--args", "[1, 2]")
    shown = cli.ok("info", "app", env={"CONVEYOR_SECRET_KEY": "k"})  # attribute defaults to broker
    assert "format:   json, signed\n" in shown
    assert shown.endswith("queues:\n  default: 1 ready, 0 scheduled, 0 running\n")


def test_inspect_tasks_and_queues(cli: Cli) -> None:
    tasks = cli.ok("inspect", "tasks", "app:broker").splitlines()
    names = [line.split("(")[0] for line in tasks]
    assert names == ["add", "app:shout", "conveyor:ping", "fragile", "hold", "pid", "report"]
    assert "add(x: int, y: int) " in tasks
    assert cli.ok("inspect", "queues", "app:broker") == "(empty)\n"

    cli.send("add", "--args", "[1, 2]")
    cli.send("report")
    assert cli.ok("inspect", "queues", "app:broker") == (
        "default: 1 ready, 0 scheduled, 0 running\nreports: 1 ready, 0 scheduled, 0 running\n"
    )


def test_inspect_workers_and_active_with_a_running_worker(cli: Cli) -> None:
    assert cli.ok("inspect", "workers", "app:broker") == "(empty)\n"
    worker = cli.start_worker()
    name = worker_name(worker.pid)
    shown = wait_until(
        lambda: cli.ok("inspect", "workers", "app:broker") or None, "the first heartbeat"
    )
    assert shown.startswith(f"{name} queues=default,reports running=0 processed=0 up="), shown
    assert cli.ok("inspect", "active", "app:broker") == "(empty)\n"

    task_id = cli.send("hold", "--args", '["release"]')
    cli.wait_status(task_id, "running")
    # A worker beats within a second of a change in what it runs (else every 5 s).
    shown_after = asyncio.run(seconds_until_active(cli.db, task_id))
    assert shown_after < 2.5, f"shown {shown_after:.2f} s after it started"
    assert cli.ok("inspect", "active", "app:broker") == f"{name} {task_id} hold\n"
    (active,) = json.loads(cli.ok("inspect", "active", "app:broker", "--json"))
    assert active == {"worker": name, "task_id": task_id, "task_name": "hold"}
    assert f"{name} queues=default,reports running=1 " in cli.ok("inspect", "workers", "app:broker")
    assert cli.ok("inspect", "queues", "app:broker") == (
        "default: 0 ready, 0 scheduled, 1 running\n"
    )

    (cli.root / "release").touch()
    assert 'result: "released"' in cli.wait_result(task_id, "succeeded")
    assert worker.stop() == 0
    assert "SIGTERM received" in worker.output()
    assert (
        cli.ok("inspect", "workers", "app:broker") == "(empty)\n"
    )  # a stopped worker says goodbye


async def seconds_until_active(db: Path, task_id: str, timeout: float = 10.0) -> float:
    """Seconds from now until `Inspector.active` lists `task_id` (polled from this process)."""
    broker = SqliteBroker(str(db))
    inspector = conveyor.inspector.Inspector(broker)
    start = time.monotonic()
    async with broker:
        while task_id not in {a.task_id for a in await inspector.active()}:
            assert time.monotonic() - start < timeout, f"{task_id} never shown as active"
            await asyncio.sleep(0.02)
    return time.monotonic() - start


def test_ping_round_trip_through_a_worker(cli: Cli) -> None:
    worker = cli.start_worker()
    lines = cli.ok("ping", "app:broker").splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(
        rf"broker sqlite:///{re.escape(str(cli.db))} reachable in [\d.]+ ms", lines[0]
    )
    assert re.fullmatch(
        rf"round trip through worker {re.escape(worker_name(worker.pid))} in [\d.]+ ms", lines[1]
    )


def test_ping_without_a_worker_fails_in_one_line(cli: Cli) -> None:
    started = time.monotonic()
    done = cli.run("ping", "app:broker", "--timeout", "1")
    assert time.monotonic() - started < 20
    assert one_error_line(done) == "conveyor: error: no worker answered within 1 s"
    assert "reachable" in done.stdout
    assert (
        cli.ok("inspect", "queues", "app:broker") == "(empty)\n"
    )  # the unanswered ping is withdrawn


def test_send_wait_prints_the_id_and_the_result(cli: Cli) -> None:
    cli.start_worker()
    done = cli.run("send", "app:broker", "add", "--args", "[1,2]", "--wait")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", lines[0]), lines
    assert lines[1:3] == ["status: succeeded", "result: 3"]
    assert re.fullmatch(r"time:   [\d.]+ ms, attempts 1", lines[3]), lines

    done = cli.run("send", "app:broker", "add", "--kwargs", '{"x": 2, "y": 5}', "--wait")
    assert done.returncode == 0, done.stderr
    assert "result: 7\n" in done.stdout


def test_send_wait_of_a_failing_task_exits_1(cli: Cli) -> None:
    cli.start_worker()
    done = cli.run("send", "app:broker", "fragile", "--args", '["orders"]', "--wait")
    assert done.returncode == 1, done.stderr
    assert "status: failed\n" in done.stdout
    assert "error:  RuntimeError: orders is not fixed yet\n" in done.stdout


def test_send_then_result(cli: Cli) -> None:
    task_id = cli.send("add", "--args", "[2, 3]")
    assert cli.result(task_id) == "status: queued\n"
    cli.start_worker()
    shown = cli.wait_result(task_id, "succeeded")
    assert "result: 5\n" in shown
    assert "attempts 1" in shown


def test_purge_a_queue_then_all(cli: Cli) -> None:
    for _ in range(2):
        cli.send("add", "--args", "[1, 1]")
    report_id = cli.send("report", "--args", "[7]")
    assert cli.ok("purge", "app:broker", "--queue", "reports") == "purged 1 message(s)\n"
    assert cli.ok("inspect", "queues", "app:broker") == (
        "default: 2 ready, 0 scheduled, 0 running\n"
    )
    assert cli.ok("purge", "app:broker", "--queue", "reports") == "purged 0 message(s)\n"
    assert cli.ok("purge", "app:broker") == "purged 2 message(s)\n"
    assert cli.ok("inspect", "queues", "app:broker") == "(empty)\n"
    assert cli.ok("info", "app:broker").endswith("queues:   (empty)\n")

    cli.start_worker()  # nothing purged comes back
    assert cli.ok("send", "app:broker", "pid", "--wait").count("status: succeeded") == 1
    done = cli.run("result", "app:broker", report_id)
    assert one_error_line(done) == f"conveyor: error: no task with id {report_id!r}"


def test_dlq_list_and_requeue_after_a_fix(cli: Cli) -> None:
    assert cli.ok("dlq", "list", "app:broker") == "the dead-letter queue is empty\n"
    cli.start_worker()
    first, second = (cli.send("fragile", "--args", f'["{name}"]') for name in ("one", "two"))
    for task_id in (first, second):
        assert "error:  RuntimeError" in cli.wait_result(task_id, "failed")

    letters = cli.ok("dlq", "list", "app:broker").splitlines()
    assert len(letters) == 2, letters
    for task_id, name in ((first, "one"), (second, "two")):
        pattern = (
            rf"{task_id} fragile queue=default at [\d-]+ [\d:]+: "
            rf"RuntimeError: {name} is not fixed yet"
        )
        assert any(re.fullmatch(pattern, line) for line in letters), (pattern, letters)

    (cli.root / "fixed").touch()
    assert cli.ok("dlq", "requeue", "app:broker", first) == "requeued 1 message(s)\n"
    assert 'result: "one fixed"' in cli.wait_result(first, "succeeded")
    assert cli.ok("dlq", "list", "app:broker").startswith(second)

    assert cli.ok("dlq", "requeue", "app:broker") == "requeued 1 message(s)\n"
    assert 'result: "two fixed"' in cli.wait_result(second, "succeeded")
    assert cli.ok("dlq", "list", "app:broker") == "the dead-letter queue is empty\n"
    assert cli.ok("dlq", "requeue", "app:broker") == "requeued 0 message(s)\n"


def test_kiq_sync_from_plain_code_through_a_worker_process(cli: Cli) -> None:
    worker = cli.start_worker()
    broker = SqliteBroker(str(cli.db), lease_seconds=2)

    @broker.task("add")
    async def add(x: int, y: int) -> int:
        return x + y

    try:
        handle = add.kiq_sync(2, 3)
        result = handle.wait_result(timeout=20)
        assert result.return_value == 5
        assert result.worker == worker_name(worker.pid)
        assert handle.is_ready()
    finally:
        broker.shutdown_sync()


# -- 2. mistakes are one line and exit code 2 -----------------------------------------------------

UNREACHABLE = {"CONVEYOR_BROKER_URL": "sqlite:////proc/nope/x.db"}


@dataclass(frozen=True)
class Mistake:
    """A command that must fail in one line: its arguments, environment, and the line's text."""

    id: str
    args: list[str]
    expected: str
    env: dict[str, str] = field(default_factory=dict)


MISTAKES = [
    Mistake(
        "missing-module",
        ["info", "nosuchmod:broker"],
        "cannot import module 'nosuchmod': no such module",
    ),
    Mistake("missing-attr", ["info", "app:nope"], "module 'app' has no attribute 'nope'"),
    Mistake("no-broker-attr", ["info", "empty"], "module 'empty' has no attribute 'broker'"),
    Mistake("not-a-broker", ["info", "app:add"], "'app:add' is not a conveyor broker"),
    Mistake(
        "raises-on-import",
        ["info", "boom:broker"],
        "importing 'boom' failed: RuntimeError: kaboom at import",
    ),
    Mistake("syntax-error", ["info", "broken:broker"], "importing 'broken' failed: SyntaxError"),
    Mistake("missing-dependency", ["info", "needsdep:broker"], "nosuchdependency"),
    Mistake("no-module", ["info", ":broker"], "module:attribute"),
    Mistake(
        "args-bad-json", ["send", "app:broker", "add", "--args", "[1,"], "--args is not valid JSON"
    ),
    Mistake(
        "args-not-a-list",
        ["send", "app:broker", "add", "--args", '{"x": 1}'],
        "--args must be a JSON list",
    ),
    Mistake(
        "kwargs-not-an-object",
        ["send", "app:broker", "add", "--kwargs", "[1]"],
        "--kwargs must be a JSON object",
    ),
    Mistake(
        "args-checked-by-producer",
        ["send", "app:broker", "add", "--args", "[1, 2, 3]"],
        "add: too many positional arguments",
    ),
    Mistake(
        "unknown-scheme",
        ["info", "app:broker"],
        "unknown broker URL scheme in 'foo://somewhere'",
        {"CONVEYOR_BROKER_URL": "foo://somewhere"},
    ),
    Mistake(
        "bad-lease",
        ["info", "app:broker"],
        "lease='soon'",
        {"CONVEYOR_BROKER_URL": "sqlite:///q.db?lease=soon"},
    ),
    Mistake(
        "raises-on-import-says-where",
        ["worker", "boom:broker"],
        "kaboom at import (boom.py, line 1; --traceback shows the rest)",
    ),
    Mistake(
        "error-in-an-imported-module-says-where",
        ["info", "importsboom:broker"],
        "importing 'importsboom' failed: RuntimeError: kaboom at import (boom.py, line 1;",
    ),
    Mistake(
        "send-short-name",
        ["send", "app:broker", "ad"],
        "app:broker registers no task 'ad': did you mean add? (--unregistered sends it anyway)",
    ),
    Mistake(
        "send-function-name",
        ["send", "app:broker", "shout"],
        "registers no task 'shout': did you mean app:shout?",
    ),
    Mistake(
        "send-unknown-name",
        ["send", "app:broker", "nosuch.task"],
        "registers no task 'nosuch.task': it registers add, app:shout, fragile, hold, pid ...",
    ),
    Mistake(
        "send-wrong-type",
        ["send", "app:broker", "add", "--args", '["x", 1]'],
        "add: argument 'x': Expected `int`, got `str`",
    ),
    Mistake(
        "send-wrong-type-by-name",
        ["send", "app:broker", "add", "--kwargs", '{"x": 1, "y": {"a": 1}}'],
        "add: argument 'y': Expected `int`, got `object`",
    ),
    Mistake(
        "result-unknown-id", ["result", "app:broker", "nosuchid"], "no task with id 'nosuchid'"
    ),
    Mistake(
        "send-wait-timeout",
        ["send", "app:broker", "add", "--args", "[1, 2]", "--wait", "--timeout", "0.3"],
        "did not finish within 0.3 s",
    ),
    Mistake("worker-module", ["worker", "nosuchmod:broker"], "'nosuchmod': no such module"),
    Mistake(
        "worker-supervised-module",
        ["worker", "nosuchmod:broker", "--workers", "2"],
        "'nosuchmod': no such module",
    ),
    Mistake(
        "worker-task-module",
        ["worker", "app:broker", "nosuch.tasks"],
        "'nosuch.tasks': no such module",
    ),
    *(
        Mistake(
            f"unwritable-db-{'-'.join(args[:2])}",
            args,
            "cannot open SQLite database '/proc/nope/x.db'",
            UNREACHABLE,
        )
        for args in (
            ["info", "app:broker"],
            ["ping", "app:broker"],
            ["send", "app:broker", "add", "--args", "[1, 2]"],
            ["result", "app:broker", "someid"],
            ["purge", "app:broker"],
            ["inspect", "queues", "app:broker"],
            ["inspect", "workers", "app:broker"],
            ["dlq", "list", "app:broker"],
            ["dlq", "requeue", "app:broker"],
            ["worker", "app:broker"],
        )
    ),
]


@pytest.fixture(scope="module")
def mistake_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command of `MISTAKES`, side by side, once for the module: they share nothing but
    a database no worker reads."""
    cli = make_cli(tmp_path_factory.mktemp("mistakes"))
    return run_all(cli, {m.id: (m.args, m.env) for m in MISTAKES})


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.id)
def test_mistakes_are_one_line_and_exit_code_2(
    mistake_runs: dict[str, subprocess.CompletedProcess[str]], mistake: Mistake
) -> None:
    done = mistake_runs[mistake.id]
    line = one_error_line(done)
    assert line.startswith("conveyor: error: "), line
    assert mistake.expected in line, line
    assert "Usage:" not in done.stderr


def test_an_unreachable_broker_prints_nothing_on_stdout(cli: Cli) -> None:
    done = cli.run("info", "app:broker", env=UNREACHABLE)
    one_error_line(done)
    assert done.stdout == ""


def test_a_password_in_the_broker_url_is_never_shown(cli: Cli) -> None:
    url = "redis://user:s3cr3t-pw@localhost:6379/0"
    for args in (["info", "app:broker"], ["ping", "app:broker"], ["worker", "app:broker"]):
        done = cli.run(*args, env={"CONVEYOR_BROKER_URL": url})
        line = one_error_line(done)
        assert "redis://user:***@localhost:6379/0" in line, line
        assert "s3cr3t" not in done.stdout + done.stderr


# -- 3. bad input never stops a worker ------------------------------------------------------------


def insert_raw(db: Path, task_id: str, body: bytes, queue: str = "default") -> None:
    """Put a message straight into the SQLite transport's table, as a foreign producer would."""
    now = time.time()
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn, conn:
        conn.execute(
            "INSERT INTO messages (task_id, queue, priority, body, available_at, enqueued_at)"
            " VALUES (?, ?, 0, ?, ?, ?)",
            (task_id, queue, body, now, now),
        )


KEY_A, KEY_B = {"CONVEYOR_SECRET_KEY": "a"}, {"CONVEYOR_SECRET_KEY": "b"}
NO_KEY = {"CONVEYOR_SECRET_KEY": ""}


@pytest.mark.parametrize(
    ("send_args", "producer_env", "worker_env", "reason"),
    [
        pytest.param(None, NO_KEY, NO_KEY, "SerializationError: malformed json data", id="garbage"),
        pytest.param(
            ["producer:broker", "no.such.task", "--args", "[1]"],
            NO_KEY,
            NO_KEY,
            "TaskNotFound: no task named 'no.such.task' on this worker",
            id="unknown-task",
        ),
        pytest.param(
            ["producer:broker", "add", "--args", '["x", 1]'],
            NO_KEY,
            NO_KEY,
            "BadArguments: argument 'x' of add",
            id="wrong-type",
        ),
        pytest.param(
            ["producer:broker", "add", "--args", "[1, 2, 3]"],
            NO_KEY,
            NO_KEY,
            "BadArguments: arguments do not fit add: too many positional arguments",
            id="too-many-args",
        ),
        pytest.param(
            ["producer:broker", "add", "--kwargs", '{"x": 1}'],
            NO_KEY,
            NO_KEY,
            "BadArguments: arguments do not fit add: missing a required argument: 'y'",
            id="missing-arg",
        ),
        pytest.param(
            ["app:broker", "add", "--args", "[1, 2]"],
            KEY_A,
            KEY_B,
            "SignatureError: message signature does not match",
            id="wrong-key",
        ),
        pytest.param(
            ["app:broker", "add", "--args", "[1, 2]"],
            NO_KEY,
            KEY_B,
            "SignatureError: message is not signed",
            id="unsigned",
        ),
        pytest.param(
            ["app:broker", "add", "--args", "[1, 2]"],
            KEY_A,
            NO_KEY,
            "SignatureError: message is signed but CONVEYOR_SECRET_KEY is not set",
            id="signed-for-keyless-worker",
        ),
    ],
)
def test_bad_input_is_dead_lettered_and_the_worker_goes_on(
    cli: Cli,
    send_args: list[str] | None,
    producer_env: dict[str, str],
    worker_env: dict[str, str],
    reason: str,
) -> None:
    worker = cli.start_worker(env=worker_env)
    if send_args is None:
        task_id = f"garbage-{uuid.uuid4().hex[:8]}"
        insert_raw(cli.db, task_id, b"\x00\xff not a message {")
    else:
        task_id = cli.ok("send", *send_args, env=producer_env).strip()

    cli.wait_status(task_id, "failed", key=worker_env["CONVEYOR_SECRET_KEY"])
    # Three independent looks, side by side: the result, the dead letters, a normal task.
    runs = run_all(
        cli,
        {
            "result": (["result", "app:broker", task_id], worker_env),
            "dlq": (["dlq", "list", "app:broker"], worker_env),
            "next": (["send", "app:broker", "pid", "--wait"], worker_env),
        },
    )
    assert runs["result"].returncode == 0, runs["result"].stderr
    assert f"status: failed\nerror:  {reason}" in runs["result"].stdout, runs["result"].stdout
    letters = runs["dlq"].stdout.splitlines()
    assert len(letters) == 1, letters
    assert letters[0].startswith(f"{task_id} "), letters
    assert "queue=default" in letters[0]
    assert f": {reason}" in letters[0], letters

    assert runs["next"].returncode == 0, runs["next"].stderr
    assert f"status: succeeded\nresult: {worker.pid}\n" in runs["next"].stdout
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.output()


def test_many_kinds_of_bad_input_in_a_row_on_one_worker(cli: Cli) -> None:
    worker = cli.start_worker()
    ids = [f"raw-{i}" for i in range(3)]
    for task_id, body in zip(ids, (b"", b"[]", b'{"task_id": 5}'), strict=True):
        insert_raw(cli.db, task_id, body)
    ids.append(cli.send("nope", app="producer:broker"))
    ids.append(cli.send("add", "--args", '[{"a": 1}, 2]', app="producer:broker"))
    for task_id in ids:
        cli.wait_result(task_id, "failed")
    assert len(cli.ok("dlq", "list", "app:broker").splitlines()) == len(ids)
    for n in range(3):
        done = cli.run("send", "app:broker", "add", "--args", f"[{n}, 1]", "--wait")
        assert f"result: {n + 1}\n" in done.stdout, done.stdout + done.stderr
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.output()
    assert (
        cli.ok("inspect", "queues", "app:broker") == "(empty)\n"
    )  # nothing left behind or redelivered


def test_a_message_with_bad_labels_is_dead_lettered(cli: Cli) -> None:
    """A decodable message whose labels break the worker's rules (from a foreign producer:
    conveyor's own producers validate labels) fails for good instead of coming back forever."""
    worker = cli.start_worker()
    bad = {"rate_limit": "bogus", "retries": "x", "result_ttl": "x"}
    for label, value in bad.items():
        message = {
            "task_id": label,
            "task_name": "fragile",
            "labels": {label: value},
            "args": ["a"],
        }
        insert_raw(cli.db, label, json.dumps(message).encode())
    for label in bad:
        assert "status: failed" in cli.wait_result(label, "failed", timeout=10)
    letters = cli.ok("dlq", "list", "app:broker").splitlines()
    for label in bad:
        assert any(line.startswith(f"{label} ") and label in line[len(label) :] for line in letters)
    done = cli.run("send", "app:broker", "pid", "--wait")
    assert f"result: {worker.pid}\n" in done.stdout, done.stdout + done.stderr
    assert cli.ok("inspect", "queues", "app:broker") == "(empty)\n"


# -- 4. the demo --------------------------------------------------------------------------------


def processes_using(url: str) -> list[int]:
    """Pids of live processes whose environment points `CONVEYOR_BROKER_URL` at `url`."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if (
                proc.status() != psutil.STATUS_ZOMBIE
                and proc.environ().get("CONVEYOR_BROKER_URL") == url
            ):
                found.append(proc.pid)
    return found


def test_demo_runs_end_to_end_and_leaves_no_worker(cli: Cli) -> None:
    done = cli.run("demo", "--tasks", "100", timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    shown = done.stdout
    assert "example tasks" in shown
    for column in ("task", "status", "result", "attempts", "ran for"):
        assert column in shown
    assert shown.count("succeeded") == 5, shown
    assert "100 no-op tasks" in shown
    assert "100/100 correct" in shown
    assert "0 failure(s)" in shown
    assert re.search(r"worker stopped with code 0 after SIGTERM", shown), shown

    url_match = re.search(r"(sqlite:///\S+/demo\.db)", shown)
    pid_match = re.search(r"worker supervisor \(pid (\d+)\)", shown)
    assert url_match is not None, shown
    assert pid_match is not None, shown
    assert not psutil.pid_exists(int(pid_match.group(1)))
    assert processes_using(url_match.group(1)) == []
    assert not Path(url_match.group(1).removeprefix("sqlite:///")).parent.exists()
