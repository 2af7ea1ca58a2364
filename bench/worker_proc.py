"""A library's worker as a child process: started by argv, its RSS sampled, stopped by pid.

The worker inherits the driver's process group, so the harness can end a stuck driver and
everything it started at once; the driver itself stops the worker by its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from pathlib import Path

import psutil

__all__ = ["WorkerDied", "WorkerProcess"]

SAMPLE_SECONDS = 0.05


class WorkerDied(RuntimeError):
    """The worker process exited while the scenario needed it."""


class WorkerProcess:
    """One worker process tree, its output appended to `log_path`."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.peak_rss = 0
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def peak_rss_mb(self) -> float:
        """The largest RSS of the whole process tree seen so far, in MiB."""
        return self.peak_rss / (1024 * 1024)

    async def start(self) -> None:
        """Start the worker and its RSS sampler."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        self._sampler = threading.Thread(
            target=self._sample, args=(self.process.pid,), name="rss-sampler", daemon=True
        )
        self._sampler.start()

    def check(self) -> None:
        """Raise `WorkerDied` with the end of its log when the worker is not running."""
        if self.process is None:
            raise WorkerDied("the worker was not started")
        if self.process.returncode is not None:
            raise WorkerDied(
                f"worker exited with code {self.process.returncode}: {self.log_tail()}"
            )

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the worker's output, joined on one line."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(empty log)"

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the worker by pid; SIGKILL it and what it started if it is not gone in time."""
        process = self.process
        if process is None:
            return
        descendants = _descendants(process.pid)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        _kill_leftovers(descendants)
        self._stop_sampling.set()
        if self._sampler is not None:
            await asyncio.to_thread(self._sampler.join, 1.0)

    def _sample(self, pid: int) -> None:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_sampling.is_set():
            total = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += proc.memory_info().rss
            self.peak_rss = max(self.peak_rss, total)
            time.sleep(SAMPLE_SECONDS)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _kill_leftovers(processes: list[psutil.Process]) -> None:
    """SIGKILL the worker's children that outlived it (`is_running` guards against pid reuse)."""
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if proc.is_running():
                proc.kill()
