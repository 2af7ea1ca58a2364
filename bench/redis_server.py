"""A private `redis-server` for one benchmark run: a free port on 127.0.0.1, no persistence.

Started as a child process by pid and stopped by that pid, so the system's Redis (6379) and
any other server are never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["HOST", "RedisServer", "RedisServerError", "free_port"]

HOST = "127.0.0.1"


class RedisServerError(RuntimeError):
    """redis-server is missing or did not answer."""


class RedisServer:
    """`with RedisServer() as redis:` starts a server; `redis.url(db)` addresses it."""

    def __init__(self, executable: str = "redis-server", start_timeout: float = 10.0) -> None:
        found = shutil.which(executable)
        if found is None:
            raise RedisServerError(f"{executable} not found on PATH (apt-get install redis-server)")
        self.executable = found
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    def url(self, db: int = 0) -> str:
        """The server's URL for database `db`."""
        return f"redis://{HOST}:{self.port}/{db}"

    def version(self) -> str:
        """The server's version, from `redis-server --version`."""
        out = subprocess.run(
            [self.executable, "--version"], capture_output=True, text=True, check=False
        ).stdout
        for word in out.split():
            if word.startswith("v="):
                return word[2:]
        return out.strip()

    def start(self) -> None:
        """Start the server on a free port and wait until it answers PING."""
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        for _attempt in range(3):
            self.port = free_port()
            log = Path(self._dir.name) / "redis.log"
            argv = [
                self.executable,
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", self._dir.name,
                "--logfile", str(log),
            ]  # fmt: skip
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
            )
            if self._wait_ready():
                return
            self.stop()  # the port was taken between probing and binding: try another
        raise RedisServerError(f"redis-server did not start (see its log in {self._dir.name})")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if self.command("PING") == "+PONG":
                    return True
            time.sleep(0.05)
        return False

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

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after 5 s."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5.0)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def free_port() -> int:
    """A port of 127.0.0.1 free at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
