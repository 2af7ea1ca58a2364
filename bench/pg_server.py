"""A private `postgres` server for one benchmark run: a fresh data directory, a free port of
127.0.0.1, the server's default settings (fsync and synchronous commit on) but for
max_connections (200).

Started as a child process by pid and stopped by that pid (SIGINT: a fast shutdown), so the
system's PostgreSQL (5432) and any other server are never touched. As root the server runs as
the `postgres` user (PostgreSQL refuses root), from a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "PostgresServerError"]

HOST = "127.0.0.1"
BIN = "/usr/lib/postgresql/15/bin"
#: The database each benchmark session gets afresh (`recreate`).
DATABASE = "bench"


class PostgresServerError(RuntimeError):
    """initdb or postgres is missing, or the server did not start."""


def _tool(name: str) -> str:
    found = shutil.which(name, path=BIN) or shutil.which(name)
    if found is None:
        raise PostgresServerError(
            f"{name} not found in {BIN} or on PATH (apt-get install postgresql)"
        )
    return found


class PostgresServer:
    """`with PostgresServer() as pg:` starts a server; `pg.url(db)` addresses it.

    Args:
        start_timeout: seconds to wait for it to answer.
        settings: more `-c name=value` server settings (e.g. statement logging to profile).
    """

    def __init__(self, start_timeout: float = 20.0, settings: dict[str, str] | None = None) -> None:
        self.initdb = _tool("initdb")
        self.postgres = _tool("postgres")
        self.psql = _tool("psql")
        self.start_timeout = start_timeout
        self.settings = {"listen_addresses": HOST, "max_connections": "200", **(settings or {})}
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.root: Path | None = None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return None if self.process is None else self.process.pid

    def url(self, db: str = DATABASE) -> str:
        """The server's URL for database `db` (trust authentication, user postgres)."""
        return f"postgresql://postgres@{HOST}:{self.port}/{db}"

    def version(self) -> str:
        """The server's version, from `postgres --version`."""
        out = subprocess.run(
            [self.postgres, "--version"], capture_output=True, text=True, check=False
        ).stdout
        words = out.split()
        return words[2] if len(words) > 2 else out.strip()

    def start(self) -> None:
        """initdb a new data directory, start the server and wait until it answers."""
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        if self.run_as is not None:
            shutil.chown(self.root, self.run_as, self.run_as)
        data = self.root / "data"
        argv = [self.initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-N"]
        done = subprocess.run(
            argv, capture_output=True, text=True, user=self.run_as, group=self.run_as, check=False
        )
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed: {done.stderr.strip()[-300:]}")
        for _attempt in range(3):
            self.port = _free_port()
            argv = [self.postgres, "-D", str(data), "-p", str(self.port), "-k", str(self.root)]
            for name, value in self.settings.items():
                argv += ["-c", f"{name}={value}"]
            log = (self.root / "postgres.log").open("ab")
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.run_as,
                group=self.run_as,
            )
            log.close()
            if self._wait_ready():
                self.recreate()
                return
            self.stop()  # the port was taken between probing and binding: try another
        raise PostgresServerError(f"postgres did not start (see {self.root}/postgres.log)")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(PostgresServerError):
                if self.sql("SELECT 1", db="postgres") == "1":
                    return True
            time.sleep(0.1)
        return False

    def sql(self, statement: str, db: str = DATABASE) -> str:
        """Run one statement with psql and return its unaligned output."""
        done = subprocess.run(
            [self.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(db),
             "-c", statement],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresServerError(f"psql failed: {done.stderr.strip()[-300:]}")
        return done.stdout.strip()

    def recreate(self, db: str = DATABASE) -> None:
        """Drop `db` (disconnecting its clients) and create it empty: each session's fresh start."""
        self.sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', db="postgres")
        self.sql(f'CREATE DATABASE "{db}"', db="postgres")

    def stop(self) -> None:
        """Stop the server by its pid: SIGINT (fast shutdown), SIGKILL after 15 s."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5.0)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
