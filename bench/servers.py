"""The benchmark's private servers: `redis-server`, `nats-server -js` and `postgres`, each on a
free port of 127.0.0.1 with a temporary directory of its own.

Invariants:
- A server is a child process of this one, started in a session of its own and stopped by its
  pid only (never by name), at `close()` or the end of its `with` block, also when it fails to
  start; its directory (data, store, log) is removed then.
- The machine's shared servers (Redis 6379, NATS 4222, PostgreSQL 5432) and any process this
  one did not start are never touched: every address used is 127.0.0.1 and a port that was free.

`PrivateServer` holds the life cycle once (find the executable, make the directory, pick a port,
start, wait until ready, stop, clean up); each server says only how it is started, how it is
seen to be ready, how its version reads and what its URL is.
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
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = [
    "DATABASE",
    "HOST",
    "NatsServer",
    "NatsServerError",
    "PostgresServer",
    "PostgresServerError",
    "PrivateServer",
    "RedisServer",
    "RedisServerError",
    "ServerError",
    "free_port",
]

HOST = "127.0.0.1"
#: The database each PostgreSQL benchmark session gets afresh (`PostgresServer.recreate`).
DATABASE = "bench"
_PG_BIN = "/usr/lib/postgresql/15/bin"


class ServerError(RuntimeError):
    """A private server's executable is missing or the server did not start or answer."""


class RedisServerError(ServerError):
    """redis-server is missing or did not answer."""


class NatsServerError(ServerError):
    """nats-server is missing or did not answer."""


class PostgresServerError(ServerError):
    """initdb or postgres is missing, or the server did not start."""


def free_port() -> int:
    """A port of 127.0.0.1 free at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateServer(ABC):
    """One private server process: `with Server() as s:` starts it, the block's end stops it.

    Subclasses set `name` (directory prefix, log file), `package` (the hint when the executable
    is missing) and `error`, and implement `argv`, `ready` and `url`.
    """

    name: ClassVar[str]
    package: ClassVar[str]
    error: ClassVar[type[ServerError]] = ServerError
    #: Directories searched for executables before, and after, PATH.
    path_before: ClassVar[str] = ""
    path_after: ClassVar[str] = ""
    #: How the server is asked to stop, and how long it gets before SIGKILL.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout_s: ClassVar[float] = 5.0

    def __init__(self, executable: str, start_timeout: float) -> None:
        self.executable = self.tool(executable)
        self.start_timeout = start_timeout
        self.run_as: str | None = None  # the user the server runs as (None: this process's)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.root: Path | None = None

    def tool(self, name: str) -> str:
        """The full path of executable `name`, or `error` saying how to install it."""
        dirs = (self.path_before, os.environ.get("PATH", os.defpath), self.path_after)
        path = os.pathsep.join(d for d in dirs if d)
        found = shutil.which(name, path=path)
        if found is None:
            raise self.error(f"{name} not found in {path} (apt-get install {self.package})")
        return found

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    @abstractmethod
    def url(self) -> str:
        """The server's URL."""

    @abstractmethod
    def argv(self, port: int, root: Path) -> list[str]:
        """The command line serving on `HOST:port`, keeping its files under `root`."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether the server answers (an OSError or `error` counts as not yet)."""

    def prepare(self, root: Path) -> None:
        """Set up `root` before the first start (nothing by default)."""

    def parse_version(self, out: str) -> str:
        """The version in the output of `executable --version` (all of it by default)."""
        return out.strip()

    def version(self) -> str:
        """The server's version, from `executable --version`."""
        argv = [self.executable, "--version"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return self.parse_version(done.stdout)

    @property
    def log(self) -> Path:
        """The file the server's output goes to."""
        assert self.root is not None
        return self.root / f"{self.name}.log"

    def start(self) -> None:
        """Make the directory, start the server on a free port and wait until it is ready."""
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        if self.run_as is not None:
            shutil.chown(self.root, self.run_as, self.run_as)
        self.prepare(self.root)
        for _attempt in range(3):
            self.port = free_port()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    self.argv(self.port, self.root),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    user=self.run_as,
                    group=self.run_as,
                )
            if self._wait_ready():
                return
            self.stop()  # the port was taken between probing and binding: try another
        tail = self.log.read_text(errors="replace").strip()[-500:]
        raise self.error(f"{self.name} did not start; its log ends:\n{tail}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError, self.error):
                if self.ready():
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the server by its pid: `stop_signal`, SIGKILL after `stop_timeout_s`."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5.0)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
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


class RedisServer(PrivateServer):
    """`with RedisServer() as redis:` a `redis-server` without persistence; `redis.url(db)`."""

    name = "redis"
    package = "redis-server"
    error = RedisServerError

    def __init__(self, executable: str = "redis-server", start_timeout: float = 10.0) -> None:
        super().__init__(executable, start_timeout)

    def url(self, db: int = 0) -> str:
        """The server's URL for database `db`."""
        return f"redis://{HOST}:{self.port}/{db}"

    def argv(self, port: int, root: Path) -> list[str]:
        """`redis-server` on `HOST:port`, no RDB nor AOF, in the foreground."""
        return [
            self.executable, "--port", str(port), "--bind", HOST, "--dir", str(root),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip

    def ready(self) -> bool:
        """Whether it answers PING."""
        return self.command("PING") == "+PONG"

    def parse_version(self, out: str) -> str:
        """The `v=7.0.15` word of `redis-server --version`."""
        return next((word[2:] for word in out.split() if word.startswith("v=")), out.strip())

    def command(self, *words: str) -> str:
        """Send one inline command and return the first line of the reply."""
        with socket.create_connection((HOST, self.port), timeout=5.0) as sock:
            sock.sendall((" ".join(words) + "\r\n").encode())
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.decode(errors="replace").split("\r\n", 1)[0]

    def flushall(self) -> None:
        """Delete every key in every database of this server."""
        reply = self.command("FLUSHALL")
        if reply != "+OK":
            raise RedisServerError(f"FLUSHALL answered {reply!r}")


class NatsServer(PrivateServer):
    """`with NatsServer() as nats:` a `nats-server -js` storing in its directory; `nats.url()`."""

    name = "nats"
    package = "nats-server"
    error = NatsServerError
    path_after = "/usr/sbin"

    def __init__(self, executable: str = "nats-server", start_timeout: float = 10.0) -> None:
        super().__init__(executable, start_timeout)

    def url(self) -> str:
        """The server's URL."""
        return f"nats://{HOST}:{self.port}"

    def argv(self, port: int, root: Path) -> list[str]:
        """`nats-server` on `HOST:port` with JetStream storing under `root`."""
        return [self.executable, "-a", HOST, "-p", str(port), "-js", "-sd", str(root)]

    def ready(self) -> bool:
        """Whether it greets a client with INFO."""
        with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
            return sock.recv(4096).startswith(b"INFO")

    def parse_version(self, out: str) -> str:
        """The `2.10.x` of `nats-server: v2.10.x`."""
        return out.strip().rpartition(" v")[2] or out.strip()


class PostgresServer(PrivateServer):
    """`with PostgresServer() as pg:` a fresh `postgres` cluster; `pg.url(db)` addresses it.

    Default settings (fsync and synchronous commit on) but max_connections (200); stopped with
    SIGINT (a fast shutdown). As root it runs as the `postgres` user (PostgreSQL refuses root),
    from a directory that user owns. Started, it has an empty `DATABASE`.

    Args:
        start_timeout: seconds to wait for it to answer.
        settings: more `-c name=value` server settings (e.g. statement logging to profile).
    """

    name = "postgres"
    package = "postgresql"
    error = PostgresServerError
    path_before = _PG_BIN
    stop_signal = signal.SIGINT
    stop_timeout_s = 15.0

    def __init__(self, start_timeout: float = 20.0, settings: dict[str, str] | None = None) -> None:
        super().__init__("postgres", start_timeout)
        self.initdb = self.tool("initdb")
        self.psql = self.tool("psql")
        self.settings = {"listen_addresses": HOST, "max_connections": "200", **(settings or {})}
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def url(self, db: str = DATABASE) -> str:
        """The server's URL for database `db` (trust authentication, user postgres)."""
        return f"postgresql://postgres@{HOST}:{self.port}/{db}"

    def prepare(self, root: Path) -> None:
        """initdb a new data directory in `root`."""
        argv = [self.initdb, "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "-N"]
        done = subprocess.run(
            argv, capture_output=True, text=True, user=self.run_as, group=self.run_as, check=False
        )
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed: {done.stderr.strip()[-300:]}")

    def argv(self, port: int, root: Path) -> list[str]:
        """`postgres` on the data directory, its socket in `root`, with `settings`."""
        argv = [self.executable, "-D", str(root / "data"), "-p", str(port), "-k", str(root)]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def ready(self) -> bool:
        """Whether it answers a query."""
        return self.sql("SELECT 1", db="postgres") == "1"

    def parse_version(self, out: str) -> str:
        """The `15.x` of `postgres (PostgreSQL) 15.x`."""
        words = out.split()
        return words[2] if len(words) > 2 else out.strip()

    def start(self) -> None:
        """initdb, start the server, wait until it answers and create an empty `DATABASE`."""
        super().start()
        self.recreate()

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
