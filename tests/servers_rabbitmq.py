"""A private RabbitMQ node for the tests that stop and start a server mid-run.

Invariants: the node never touches the machine's RabbitMQ. It has a name of its own
(`conveyor-test-<pid>-<hex>@localhost`), its own AMQP and distribution ports, and an `epmd` of
its own on a free port (`ERL_EPMD_PORT`; the node is told not to start one), so it is neither
registered with nor reachable through the shared node's `epmd`. Everything it writes (database,
logs, plugins, the Erlang cookie under `HOME`) is in its own directory; the management plugin
and every other plugin are off. It runs as the user running the tests (root works: the Debian
wrappers in /usr/sbin, which switch to the `rabbitmq` user and write to its log files, are not
used). `stop` halts the node by its name and then makes sure, by pid, that the `rabbitmq-server`
process group and the `epmd` it started are gone: both are children of the test process, which
reaps them, so none is left running.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import free_port

#: Where Debian keeps the real scripts (the /usr/sbin ones are wrappers that `su rabbitmq`).
_SCRIPTS = "/usr/lib/rabbitmq/bin"


def unavailable(reason: str) -> None:
    """Skip with `reason`, or fail when `CI` is set, so a CI run never passes by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this fails instead of skipping")
    pytest.skip(reason)


def _tool(name: str) -> str:
    found = shutil.which(name, path=_SCRIPTS) or shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (a private RabbitMQ node needs it)")
    assert found is not None
    return found


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _distinct_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own, started with `start` and halted with `stop`.

    Args:
        root: a directory of its own for the node's files.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.dist_port, self.epmd_port = _distinct_ports(3)
        self.node = f"conveyor-test-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self._ctl = "rabbitmqctl"  # its path, found by `start`

    @property
    def url(self) -> str:
        """The node's AMQP URL (the default `guest` user, allowed from 127.0.0.1)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        root = self.root
        return {
            **os.environ,
            "HOME": str(root),  # the node's and rabbitmqctl's .erlang.cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(root / "plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(root / "feature_flags"),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        }

    def _write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cookie = self.root / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")

    def start(self) -> None:
        """Start `epmd` and the node, and wait until it accepts AMQP connections (skip, or
        fail under CI, when RabbitMQ is not installed or the node does not start)."""
        server, epmd, self._ctl = _tool("rabbitmq-server"), _tool("epmd"), _tool("rabbitmqctl")
        self._write_files()
        self.epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with open(self.root / "server.out", "wb") as out:
            self.proc = subprocess.Popen(
                [server],
                env=self._env(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, signalled by its pid
            )
        if not self._listening(60):
            unavailable(f"a private RabbitMQ node did not start in 60 s: {self._tail()}")
        done = self._run("await_startup", "--timeout", "60")
        if done.returncode != 0:  # e.g. another process took its port first
            said = (done.stderr.strip() or done.stdout.strip()).partition("\n")[0]
            unavailable(f"a private RabbitMQ node did not start: {said} | {self._tail()}")

    def _listening(self, timeout: float) -> bool:
        """Wait until the AMQP port accepts connections; False if the node exited first."""
        deadline = time.monotonic() + timeout
        while not _listens(self.port):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _tail(self) -> str:
        try:
            lines = (self.root / "server.out").read_text(errors="replace").splitlines()
        except OSError as exc:
            return str(exc)
        return " | ".join(line.strip() for line in lines[-8:] if line.strip())

    def _run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._ctl, "-n", self.node, *args],
            env=self._env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ctl(self, *args: str, timeout: float = 90) -> None:
        """Run `rabbitmqctl -n <node> *args` against this node, asserting that it succeeds."""
        done = self._run(*args, timeout=timeout)
        shown = f"rabbitmqctl -n {self.node} {' '.join(args)}"
        assert done.returncode == 0, f"{shown}: {done.stderr.strip() or done.stdout.strip()}"

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (the Erlang node stays up): clients are disconnected
        and new connections refused."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        """Start the RabbitMQ application again (it keeps its durable queues and messages),
        and wait until it accepts AMQP connections."""
        self.ctl("start_app")
        assert self._listening(30), f"the node did not listen again: {self._tail()}"

    def stop(self) -> None:
        """Halt the node (`rabbitmqctl stop`, else SIGTERM then SIGKILL to its process group)
        and its `epmd`, by pid; a no-op for what already stopped."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                self.ctl("stop", timeout=30)
                proc.wait(30)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                _end_group(proc)
        epmd, self.epmd = self.epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(10)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait(5)


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by `proc` (the script and the Erlang VM), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
