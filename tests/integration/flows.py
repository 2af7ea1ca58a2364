"""Helpers of the scheduler and workflow process tests: the app of `flow_app_template.py` on
SQLite or Redis, and `conveyor scheduler` processes.

The app is the `App` of `tests/integration/conftest.py` (whose `workers` fixture starts worker
processes), with the tasks of `flow_app_template.py` instead of `app_template.py`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import LEASE, App
from tests.servers import drop_prefix, redis_url, unique_prefix

TEMPLATE = Path(__file__).with_name("flow_app_template.py")
ENGINES = ["sqlite", "redis"]


@contextlib.asynccontextmanager
async def flow_app(
    engine: str,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: str | None = None,
    template: Path | None = None,
) -> AsyncIterator[App]:
    """Write, import and start the app of `template` (`flow_app_template.py` by default) on
    `engine` ("sqlite" or "redis", on the test Redis or `server`); clean up after."""
    name = f"cvflow_{uuid.uuid4().hex[:10]}"
    server = server or (redis_url() if engine == "redis" else None)
    if server is not None:
        prefix = unique_prefix()
        url = f"{server}?prefix={prefix}&lease={LEASE:g}"
    else:
        url = f"sqlite:///{root}/flow.db?lease={LEASE:g}"
    (root / f"{name}.py").write_text((template or TEMPLATE).read_text())
    monkeypatch.setenv("CONVEYOR_BROKER_URL", url)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    app = App(root, name, url, importlib.import_module(name))
    await app.broker.startup()
    try:
        yield app
    finally:
        await app.broker.shutdown()
        sys.modules.pop(name, None)
        if server is not None:
            drop_prefix(server, prefix)


@dataclass
class Schedulers:
    """`conveyor scheduler` processes of one test, stopped by pid at its end."""

    root: Path
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(
        self, app: App, *flags: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "conveyor", "scheduler", app.spec, *flags]
        env = {
            **os.environ,
            "CONVEYOR_BROKER_URL": app.url,
            "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        }
        (self.root / "logs").mkdir(exist_ok=True)
        log_path = self.root / "logs" / f"scheduler-{len(self.started)}.err"
        with log_path.open("wb") as err:
            proc = subprocess.Popen(
                argv, cwd=app.root, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        self.started.append((proc, log_path))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> Path:
        """The file with the output of `proc`."""
        return next(path for started, path in self.started if started is proc)

    def stop_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def dump_logs(self) -> None:
        for i, (proc, path) in enumerate(self.started):
            print(f"--- scheduler {i} pid {proc.pid}")
            print(path.read_text(errors="replace")[-4000:])


def fire_ms(task_id: str) -> int:
    """The fire time (unix ms) in a scheduled run's id `s-<hash>-<ms>`."""
    return int(task_id.rsplit("-", 1)[1])
