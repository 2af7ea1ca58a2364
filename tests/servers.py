"""Servers the network-engine tests talk to: found from the environment, skipped when absent.

A test that needs Redis reads `CONVEYOR_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/15`).
When the server cannot be reached the test is skipped with the reason, or fails when `CI` is set,
so a CI run never passes by skipping. Each test gets its own key prefix and its keys are deleted
afterwards, so tests never see each other's messages.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conveyor._urls import safe_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_server(name: str, url: str) -> str:
    """Return `url` when its server answers; else skip (fail under CI) naming the variable."""
    parts = urlsplit(url)
    if _reachable(parts.hostname or "127.0.0.1", parts.port or 6379):
        return url
    shown = safe_url(url)
    reason = f"{name} server not reachable at {shown} (set CONVEYOR_TEST_{name.upper()}_URL)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this fails instead of skipping")
    pytest.skip(reason)


def redis_url() -> str:
    """The Redis the tests use, or a skip."""
    return need_server("redis", os.environ.get("CONVEYOR_TEST_REDIS_URL", DEFAULT_REDIS_URL))


DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def amqp_url() -> str:
    """The RabbitMQ the tests use (`CONVEYOR_TEST_AMQP_URL`), or a skip.

    RabbitMQ queues outlive a test: each test names its own prefix (`unique_prefix`) and
    deletes what it declared (`AmqpTransport.delete_topology`).
    """
    return need_server("amqp", os.environ.get("CONVEYOR_TEST_AMQP_URL", DEFAULT_AMQP_URL))


DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def nats_url() -> str:
    """The NATS JetStream server the tests use (`CONVEYOR_TEST_NATS_URL`), or a skip.

    JetStream keeps streams on disk: each test names its own prefix (`unique_prefix`) and
    deletes its streams afterwards (`drop_nats_prefix`).
    """
    return need_server("nats", os.environ.get("CONVEYOR_TEST_NATS_URL", DEFAULT_NATS_URL))


async def drop_nats_prefix(url: str, prefix: str) -> None:
    """Delete every JetStream stream (and so its consumers) named `<prefix>_...`."""
    import json

    import nats

    nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=1)
    try:
        reply = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)
        for name in json.loads(reply.data).get("streams") or []:
            if name.startswith(f"{prefix}_"):
                await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)
    finally:
        await nc.close()


DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/conveyor_test"


@functools.cache
def postgres_url() -> str:
    """The PostgreSQL database the tests use (`CONVEYOR_TEST_POSTGRES_URL`), created when
    missing, or a skip. Each test keeps its tables in a schema of its own (`?schema=`) and
    drops it afterwards (`drop_postgres_schema`)."""
    url = need_server(
        "postgres", os.environ.get("CONVEYOR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    _create_database(url)
    return url


def _create_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another test process
                conn.execute(f'CREATE DATABASE "{name}"')


async def drop_postgres_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def unique_prefix() -> str:
    """A key prefix of one test."""
    return f"cvtest-{uuid.uuid4().hex[:12]}"


def drop_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix`."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateServer:
    """A server process of one test on a free port, keeping its data in its own directory, so
    it can be stopped and started again without losing what it kept. Subclasses say how to run
    it (`binary`, `argv`) and how to reach it (`url`)."""

    #: The executable's name, looked up on PATH (and in /usr/sbin, where Debian puts some).
    binary = ""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def argv(self, binary: str) -> list[str]:
        """The command line that starts the server."""
        raise NotImplementedError

    #: The user (and group) to run the server as; None: this process's.
    run_as: str | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (skip, or fail under CI,
        when it is not installed)."""
        binary = shutil.which(self.binary) or shutil.which(self.binary, path="/usr/sbin")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail(f"{self.binary} is not installed; CI is set")
            pytest.skip(f"{self.binary} is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv(binary),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            user=self.run_as,
            group=self.run_as,
        )
        deadline = time.monotonic() + 10
        while not _reachable("127.0.0.1", self.port):
            assert self.proc.poll() is None, f"{self.binary} exited at start"
            assert time.monotonic() < deadline, f"{self.binary} did not start in 10 s"
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class PrivateRedis(PrivateServer):
    """A `redis-server` of one test, persisting every write (AOF, fsync always).

    Args:
        extra: more `redis-server` options, e.g. ["--requirepass", "pw"].
    """

    binary = "redis-server"

    def __init__(self, root: Path, port: int | None = None, extra: list[str] | None = None) -> None:
        super().__init__(root, port)
        self.extra = extra or []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self, binary: str) -> list[str]:
        return [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always", *self.extra,
        ]  # fmt: skip


class PrivateNats(PrivateServer):
    """A `nats-server -js` of one test, storing in its own directory."""

    binary = "nats-server"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self, binary: str) -> list[str]:
        return [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.root)]


class PrivatePostgres(PrivateServer):
    """A `postgres` server of one test in its own data directory (made by `initdb` at the first
    start), so it can be stopped and started again keeping every committed write. Run as the
    `postgres` user when the tests run as root (PostgreSQL refuses root)."""

    binary = "postgres"
    _BIN = "/usr/lib/postgresql/15/bin"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __init__(self, root: Path, port: int | None = None) -> None:
        super().__init__(root, port)
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def _tool(self, name: str) -> str:
        found = shutil.which(name) or shutil.which(name, path=self._BIN)
        if found is None:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is not installed; CI is set")
            pytest.skip(f"{name} (PostgreSQL's server) is not installed")
        return found

    def start(self) -> None:
        """Make the data directory on the first start, then start as `PrivateServer` does.

        As root, the directory is a new one under the system's temporary directory, owned by
        `postgres` (pytest's own is private to root); `remove` deletes it.
        """
        data = self.root / "data"
        if not data.exists():
            if self.run_as is not None:
                self.root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
                shutil.chown(self.root, "postgres", "postgres")
                data = self.root / "data"
            self.root.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [self._tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N"],
                check=True,
                capture_output=True,
                user=self.run_as,
                group=self.run_as,
            )
        self.binary = self._tool("postgres")
        super().start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Wait until it accepts sessions: its port opens while it is still starting up."""
        import psycopg

        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "postgres did not accept sessions in 15 s"
                time.sleep(0.05)

    def argv(self, binary: str) -> list[str]:
        return [
            binary, "-D", str(self.root / "data"), "-p", str(self.port), "-k", str(self.root),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
        ]  # fmt: skip

    def remove(self) -> None:
        """Delete the data directory (after `stop`)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: clients are disconnected, committed work is kept)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
