"""A private `nats-server -js` for one benchmark run: a free port on 127.0.0.1, JetStream
storing in a temporary directory of its own.

Started as a child process by pid and stopped by that pid, so the machine's NATS (4222) and any
other server are never touched.
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

from bench.redis_server import HOST, free_port

__all__ = ["NatsServer", "NatsServerError"]


class NatsServerError(RuntimeError):
    """nats-server is missing or did not answer."""


class NatsServer:
    """`with NatsServer() as nats:` starts a server; `nats.url()` addresses it."""

    def __init__(self, executable: str = "nats-server", start_timeout: float = 10.0) -> None:
        found = shutil.which(executable) or shutil.which(executable, path="/usr/sbin")
        if found is None:
            raise NatsServerError(f"{executable} not found on PATH (apt-get install nats-server)")
        self.executable = found
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.process is None else self.process.pid

    def url(self) -> str:
        """The server's URL."""
        return f"nats://{HOST}:{self.port}"

    def version(self) -> str:
        """The server's version, from `nats-server --version`."""
        out = subprocess.run(
            [self.executable, "--version"], capture_output=True, text=True, check=False
        ).stdout
        return out.strip().rpartition(" v")[2] or out.strip()

    def start(self) -> None:
        """Start the server on a free port and wait until it greets a client with INFO."""
        self._dir = tempfile.TemporaryDirectory(prefix="bench-nats-")
        for _attempt in range(3):
            self.port = free_port()
            argv = [
                self.executable, "-a", HOST, "-p", str(self.port),
                "-js", "-sd", self._dir.name,
                "-l", str(Path(self._dir.name) / "nats.log"),
            ]  # fmt: skip
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
            )
            if self._wait_ready():
                return
            self.stop()  # the port was taken between probing and binding: try another
        raise NatsServerError(f"nats-server did not start (see its log in {self._dir.name})")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), timeout=1.0) as sock,
            ):
                if sock.recv(4096).startswith(b"INFO"):
                    return True
            time.sleep(0.05)
        return False

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

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
