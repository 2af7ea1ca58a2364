"""Fixtures for tests that run real worker processes through the CLI, on SQLite or Redis.

`app` writes the tasks module (`app_template.py`) into `tmp_path` under a unique name, imports
it in the test's process as the producer, and `workers` starts `python -m conveyor worker` on
it. Every process a test starts is stopped by pid when the test ends (SIGTERM, then SIGKILL).
`make_app(url=...)` puts the app on another broker URL (a Redis one with its own `prefix`,
whose keys are deleted when the test ends); `private_redis` is a `redis-server` of one test.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import psutil
import pytest

from conveyor import Broker
from tests.servers import DEFAULT_REDIS_URL, PrivateRedis, drop_prefix, free_port

#: The lease `make_app` gives an app: a killed worker's tasks come back about this long after.
LEASE = 2.0

TEMPLATE = Path(__file__).with_name("app_template.py")
STOP_TIMEOUT = 10.0


@dataclass
class App:
    """The tasks module of one test, imported here, and the broker URL its workers use."""

    root: Path
    name: str
    url: str
    module: Any

    @property
    def broker(self) -> Broker:
        broker: Broker = self.module.broker
        return broker

    @property
    def spec(self) -> str:
        return f"{self.name}:broker"

    @property
    def path(self) -> Path:
        return self.root / f"{self.name}.py"

    def marks(self, name: str) -> list[list[str]]:
        """Lines a task appended to `marks/<name>.txt`, split into fields."""
        result: list[list[str]] = self.module.marks(name)
        return result

    def open_gate(self, key: str) -> None:
        """Let tasks waiting on `key` go on."""
        (self.root / "marks").mkdir(exist_ok=True)
        (self.root / "marks" / f"{key}.go").touch()

    async def live_workers(self) -> dict[int, dict[str, Any]]:
        """Heartbeats of live workers by pid."""
        beats = await self.broker.state.heartbeats()
        return {beat.pid: msgspec.structs.asdict(beat) for beat in beats}


@pytest.fixture
async def make_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """Yield `make(lease=LEASE, url=None)`: write, import and start a tasks module.

    Without `url` the app is on the SQLite file `tmp_path/q.db`. A Redis `url` must name its
    own `prefix` (query option), whose keys are deleted when the test ends; `lease` is added to
    a URL that sets none (`lease=None`: the engine's default). The first app lives in
    `tmp_path`, each further one in a directory of its own (so its marks are its own).
    """
    made: list[App] = []

    async def make(lease: float | None = LEASE, url: str | None = None) -> App:
        name = f"cvapp_{uuid.uuid4().hex[:10]}"
        root = tmp_path / name if made else tmp_path
        root.mkdir(exist_ok=True)
        (root / f"{name}.py").write_text(TEMPLATE.read_text())
        url = url or f"sqlite:///{tmp_path}/q.db"
        if lease is not None and "lease" not in _query(url):
            url += f"{'&' if urlsplit(url).query else '?'}lease={lease:g}"
        if _is_redis(url):
            assert "prefix" in _query(url), "a Redis app needs a prefix of its own"
        monkeypatch.setenv("CONVEYOR_BROKER_URL", url)  # read when the module is imported
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        app = App(root, name, url, importlib.import_module(name))
        made.append(app)
        await app.broker.startup()
        return app

    yield make
    for app in made:
        await app.broker.shutdown()
        sys.modules.pop(app.name, None)
    for app in made:
        if _is_redis(app.url):
            _drop_keys(app.url)


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def _is_redis(url: str) -> bool:
    scheme = urlsplit(url).scheme
    return scheme.startswith("redis") or scheme == "unix"


def _drop_keys(url: str) -> None:
    """Delete the keys under the prefix of a Redis app's `url`.

    The shared test Redis must answer; a private server (`private_redis`) may already be gone,
    and its files go with `tmp_path`.
    """
    parts = urlsplit(url)
    server = parts._replace(query="").geturl()
    shared = urlsplit(os.environ.get("CONVEYOR_TEST_REDIS_URL", DEFAULT_REDIS_URL))
    private = (parts.hostname, parts.port or 6379) != (shared.hostname, shared.port or 6379)
    import redis  # the optional extra: only Redis apps need it

    try:
        drop_prefix(server, _query(url)["prefix"])
    except redis.ConnectionError:
        if not private:
            raise


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started `redis-server` of this test on a free port, its files in `tmp_path/redis`;
    stopped at the end (by pid) if the test left it running."""
    server = PrivateRedis(tmp_path / "redis", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def app(make_app: Callable[..., Awaitable[App]]) -> App:
    """The tasks module on a broker with a 2-second lease."""
    return await make_app()


@dataclass
class WorkerProcess:
    """One `conveyor worker` process (a worker, or a supervisor with `--workers`)."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path
    argv: list[str]
    known: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[psutil.Process]:
        """Live child processes (a supervisor's workers); all descendants are remembered, for
        the teardown."""
        try:
            root = psutil.Process(self.pid)
            found = root.children()
            self.known.update((p.pid, p) for p in root.children(recursive=True))
        except psutil.NoSuchProcess:
            return []
        return [child for child in found if _alive(child)]

    def child_pids(self) -> set[int]:
        return {child.pid for child in self.children()}

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float) -> int:
        """SIGTERM and return the exit code; fail (after a SIGKILL) if it takes longer."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"worker {self.pid} did not exit within {timeout} s of SIGTERM")

    def kill(self) -> None:
        """SIGKILL this process (not its children: a supervisor's die with it)."""
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop this process and every child seen: SIGTERM, then SIGKILL after a timeout."""
        self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        leftover = [child for child in self.known.values() if _alive(child)]
        for child in leftover:  # psutil refuses to signal a pid that was reused since
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        _, still = psutil.wait_procs(leftover, timeout=STOP_TIMEOUT)
        for child in still:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Workers:
    """Starts worker processes for one test and stops them all at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[WorkerProcess] = []

    def start(self, app: App, *flags: str) -> WorkerProcess:
        """Run `python -m conveyor worker <app>:broker *flags` in the app's directory."""
        argv = [sys.executable, "-m", "conveyor", "worker", app.spec, *flags]
        env = {**os.environ, "CONVEYOR_BROKER_URL": app.url, "PYTHONDONTWRITEBYTECODE": "1"}
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        stderr_path = logs / f"worker-{len(self.started)}.err"
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                argv, cwd=app.root, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        worker = WorkerProcess(proc, stderr_path, argv)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        """Stop every worker, then any process left with one of their command lines (a
        descendant orphaned before we saw it, e.g. a pool process of a crashed worker)."""
        for worker in reversed(self.started):
            worker.stop()
        specs = {worker.argv[4] for worker in self.started}  # unique module names
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if cmdline[1:4] == ["-m", "conveyor", "worker"] and specs & set(cmdline):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()

    def dump_logs(self) -> None:
        for i, worker in enumerate(self.started):
            print(f"--- worker {i} pid {worker.pid}: {' '.join(worker.argv[3:])}")
            print(worker.stderr()[-6000:])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes with `workers.start(app, *flags)`; all are stopped at the end."""
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
        started.dump_logs()  # shown by pytest only when the test fails
