"""`conveyor web` as a real uvicorn subprocess for the web tests, started through the CLI on a
test's app and stopped by pid at the end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import App
from tests.servers import free_port

TOKEN = "test-token-3f9c"
START_TIMEOUT = 20.0


@dataclass
class WebServer:
    """One `conveyor web` process."""

    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.AsyncClient:
        """An HTTP client for this server that sends the token."""
        return httpx.AsyncClient(base_url=self.url, headers=self.auth, timeout=30.0)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_web(app: App, token: str = TOKEN, *options: str) -> WebServer:
    """Run `python -m conveyor web <app> --port P *options` with the token `token` in
    `CONVEYOR_WEB_TOKEN` (unless `options` give it another way) and wait until it answers."""
    port = free_port()
    log = app.root / f"web-{port}.log"
    argv = [sys.executable, "-m", "conveyor", "web", app.spec, "--port", str(port), *options]
    env = {**os.environ, "CONVEYOR_BROKER_URL": app.url}
    env.pop("CONVEYOR_WEB_TOKEN", None)
    if not any(option.startswith("--token") for option in options):
        env["CONVEYOR_WEB_TOKEN"] = token
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=app.root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    server = WebServer(proc, f"http://127.0.0.1:{port}", token, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{server.url}/tasks/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"conveyor web did not start:\n{server.output()[-3000:]}")
        time.sleep(0.05)


def serve(app: App) -> Iterator[WebServer]:
    """`conveyor web` on the test's app, with the token `TOKEN`, for a module's `web` fixture."""
    server = start_web(app)
    try:
        yield server
    finally:
        server.stop()
        print(f"--- conveyor web\n{server.output()[-4000:]}")


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Wait until `check()` is true, asking every 0.1 s; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
