"""The multi-process supervisor: keeps N worker processes alive, restarts one that dies or
recycles itself, restarts all on code changes (`--reload`), and forwards SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.worker.consumer import WorkerOptions

__all__ = ["Supervisor", "become_child", "supervise_cli", "supervise_forked"]

log = logging.getLogger("conveyor.supervisor")

POLL_SECONDS = 0.2
FAST_DEATH_SECONDS = 2.0


class Child(Protocol):
    """What the supervisor needs of a worker process."""

    @property
    def pid(self) -> int | None: ...

    def exitcode(self) -> int | None:
        """None while running."""
        ...

    def signal(self, sig: int) -> None:
        """Send `sig` if still running."""
        ...


class _Popen:
    def __init__(self, argv: Sequence[str]) -> None:
        self._proc = subprocess.Popen(argv, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def exitcode(self) -> int | None:
        return self._proc.poll()

    def signal(self, sig: int) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)


class _Forked:
    def __init__(self, target: Callable[[], None]) -> None:
        self._proc = multiprocessing.get_context("fork").Process(target=target, daemon=False)
        self._proc.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def signal(self, sig: int) -> None:
        if self._proc.exitcode is None and self._proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)


class Supervisor:
    """Runs `count` children made by `spawn` until SIGINT/SIGTERM, restarting the dead."""

    def __init__(
        self,
        spawn: Callable[[], Child],
        count: int,
        *,
        shutdown_timeout: float = 30.0,
        reload_dir: Path | Sequence[Path] | None = None,
        max_fails: int | None = None,
    ) -> None:
        self._spawn = spawn
        self._count = count
        self._shutdown_timeout = shutdown_timeout
        dirs = [reload_dir] if isinstance(reload_dir, Path) else list(reload_dir or [])
        self._reload_dirs = dirs
        self._max_fails = max_fails  # worker deaths (not recycling) before giving up
        self._deaths = 0
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._children: list[tuple[Child, float]] = []
        self._failures = 0

    def run(self) -> int:
        """Supervise until stopped; return the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        if self._reload_dirs:
            threading.Thread(target=self._watch, daemon=True, name="conveyor-reload").start()
        self._children = [self._start() for _ in range(self._count)]
        while not self._stop.wait(POLL_SECONDS):
            if self._changed.is_set():
                self._changed.clear()
                log.info("code changed: restarting workers")
                self._stop_children()
                self._children = [self._start() for _ in range(self._count)]
                continue
            self._children = [self._check(child, started) for child, started in self._children]
        self._stop_children()
        return 1 if self._gave_up() else 0

    def _gave_up(self) -> bool:
        return self._max_fails is not None and self._deaths > self._max_fails

    def _start(self) -> tuple[Child, float]:
        child = self._spawn()
        log.info("started worker process %s", child.pid)
        return child, time.monotonic()

    def _check(self, child: Child, started: float) -> tuple[Child, float]:
        code = child.exitcode()
        if code is None:
            return child, started
        if code == 0:
            log.info("worker process %s recycled itself: starting a new one", child.pid)
            self._failures = 0
        else:
            self._deaths += 1
            if self._gave_up():
                log.error(
                    "worker process %s died with code %s: %d deaths, more than --max-fails"
                    " %d: stopping",
                    child.pid,
                    code,
                    self._deaths,
                    self._max_fails,
                )
                self._stop.set()
                return child, started
            log.warning("worker process %s died with code %s: restarting it", child.pid, code)
            self._failures = (
                self._failures + 1 if time.monotonic() - started < FAST_DEATH_SECONDS else 0
            )
            pause = min(0.5 * 2 ** min(self._failures, 5), 10.0)  # a crash loop: back off
            if self._failures and self._stop.wait(pause):
                return child, started  # stopping: start nothing more
        return self._start()

    def _on_signal(self, sig: int, _frame: object) -> None:
        if self._stop.is_set():
            log.warning("second signal: killing worker processes")
            for child, _ in self._children:
                child.signal(signal.SIGKILL)
            os._exit(1)
        self._stop.set()

    def _stop_children(self) -> None:
        for child, _ in self._children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self._shutdown_timeout + 10.0
        while time.monotonic() < deadline and any(c.exitcode() is None for c, _ in self._children):
            time.sleep(0.05)
        for child, _ in self._children:
            if child.exitcode() is None:
                log.warning("worker process %s did not stop: killing it", child.pid)
                child.signal(signal.SIGKILL)

    def _watch(self) -> None:
        import watchfiles

        for _changes in watchfiles.watch(
            *self._reload_dirs, watch_filter=watchfiles.PythonFilter(), stop_event=self._stop
        ):
            self._changed.set()


def become_child() -> None:
    """In a child: die with the supervisor (Linux), so a SIGKILLed supervisor leaves no orphans."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _one_with_scheduler(spawn: Callable[[bool], Child], wanted: bool) -> Callable[[], Child]:
    """A spawn function giving the scheduler to one live child (to a new one if it died)."""
    holder: list[Child] = []

    def spawn_next() -> Child:
        give = wanted and (not holder or holder[0].exitcode() is not None)
        child = spawn(give)
        if give:
            holder[:] = [child]
        return child

    return spawn_next


def supervise_cli(
    argv: Sequence[str],
    count: int,
    shutdown_timeout: float,
    reload_dir: Path | Sequence[Path] | None,
    *,
    with_scheduler: bool = False,
    max_fails: int | None = None,
) -> int:
    """Supervise `count` copies of the worker command line `argv` (already with `--child`);
    with `with_scheduler`, one of them gets `--with-scheduler`; give up (exit code 1) after
    more than `max_fails` deaths."""
    spawn = _one_with_scheduler(
        lambda give: _Popen([*argv, "--with-scheduler"] if give else argv), with_scheduler
    )
    supervisor = Supervisor(
        spawn, count, shutdown_timeout=shutdown_timeout, reload_dir=reload_dir, max_fails=max_fails
    )
    return supervisor.run()


def supervise_forked(
    broker: Broker, options: WorkerOptions, count: int, *, with_scheduler: bool = False
) -> None:
    """`broker.run(workers=N)`: fork N workers of this script's broker and supervise them."""
    from conveyor.worker.run import run_one_process

    def child(scheduler: bool) -> None:
        os.setsid()
        become_child()
        run_one_process(broker, options, with_scheduler=scheduler)

    spawn = _one_with_scheduler(
        lambda give: _Forked(functools.partial(child, give)), with_scheduler
    )
    Supervisor(spawn, count, shutdown_timeout=options.shutdown_timeout).run()
