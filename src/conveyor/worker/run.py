"""Running workers: in this process (`broker.run()`, the CLI with one worker) or under the
supervisor (`--workers N`, `--reload`, recycling limits), with SIGINT/SIGTERM draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.logs import ensure_logging, one_line
from conveyor.worker.consumer import Worker, WorkerOptions

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.scheduler import Scheduler

__all__ = [
    "install_uvloop",
    "run_blocking",
    "run_in_loop",
    "run_one_process",
    "run_scheduler",
    "run_worker",
]

log = logging.getLogger("conveyor.worker")

_OPTION_NAMES = set(WorkerOptions.__dataclass_fields__)


def worker_options(**options: Any) -> WorkerOptions:
    """Build `WorkerOptions` from keyword options, ignoring those that are `None`."""
    queues = options.pop("queues", None)
    if isinstance(queues, str):
        queues = [q for q in queues.split(",") if q]
    if queues:
        options["queues"] = tuple(queues)
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown worker option(s): {', '.join(sorted(unknown))}")
    return WorkerOptions(**{k: v for k, v in options.items() if v is not None})


async def run_worker(
    broker: Broker,
    options: WorkerOptions,
    stop: asyncio.Event | None = None,
    *,
    with_scheduler: bool = False,
) -> Worker:
    """Run one worker in the running loop until SIGINT/SIGTERM (or `stop`), then drain.

    With `with_scheduler`, a `Scheduler` runs beside it until the worker stops.
    """
    stop = stop or asyncio.Event()
    broker.is_worker_process = True
    worker = Worker(broker, options)
    # What the app made at import never needs collecting: frozen, it is not traversed by every
    # full collection, which keeps the worker's GC pauses (and latency tail) short.
    gc.freeze()
    with _signals_set(stop):
        if not with_scheduler:
            await worker.run(stop)
            return worker
        from conveyor.scheduler import Scheduler

        await broker.startup()
        scheduler = asyncio.create_task(Scheduler(broker).run(stop), name="conveyor-scheduler")
        scheduler.add_done_callback(_log_crash)
        try:
            await worker.run(stop, manage_broker=False)
        finally:
            stop.set()  # the worker may stop on its own (recycling): the scheduler goes too
            with contextlib.suppress(Exception):  # a crash was logged when it happened
                await scheduler
            await broker.shutdown()
    return worker


def _log_crash(task: asyncio.Task[None]) -> None:
    """Log the scheduler's end when it is not a clean stop (the worker goes on without it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the scheduler stopped", exc_info=task.exception())


async def run_scheduler(scheduler: Scheduler) -> None:
    """Run `scheduler` until SIGINT/SIGTERM (`conveyor scheduler`)."""
    stop = asyncio.Event()
    await scheduler.startup()
    try:
        with _signals_set(stop):
            await scheduler.run(stop)
    finally:
        await scheduler.shutdown()


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Any:
    loop = asyncio.get_running_loop()
    installed = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, _on_signal, stop, sig)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        log.warning("second %s: exiting now", sig.name)
        os._exit(1)
    log.info("%s received: finishing running tasks", sig.name)
    stop.set()


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when uvloop is installed; True if it was."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def run_in_loop(
    broker: Broker,
    *,
    workers: int = 1,
    with_scheduler: bool = False,
    log_level: str | None = None,
    log_format: str = "text",
    **options: Any,
) -> None:
    """`broker.run_async(...)`: run one worker (and the scheduler) in the current loop, logging
    as `run_blocking` does."""
    if workers != 1:
        raise ValueError("run_async runs one worker; use broker.run(workers=N) or the CLI")
    opts = worker_options(**options)
    ensure_logging(log_level, log_format)
    await run_worker(broker, opts, with_scheduler=with_scheduler)


def run_blocking(
    broker: Broker,
    *,
    workers: int = 1,
    with_scheduler: bool = False,
    log_level: str | None = None,
    log_format: str = "text",
    **options: Any,
) -> None:
    """`broker.run(...)`: block running workers until SIGINT/SIGTERM.

    With `with_scheduler`, one of the workers also runs the scheduler. The worker's lines go to
    stderr at `log_level` (INFO) as the CLI's do, unless the program configured logging itself
    (then only `log_level`, when given, is applied). A broker that cannot be reached or is
    misconfigured ends the process as the CLI does: one line on stderr and exit code 2.
    """
    opts = worker_options(**options)
    ensure_logging(log_level, log_format)
    if workers > 1:
        from conveyor.worker.supervisor import supervise_forked

        supervise_forked(broker, opts, workers, with_scheduler=with_scheduler)
        return
    run_one_process(broker, opts, with_scheduler=with_scheduler)


def run_one_process(broker: Broker, options: WorkerOptions, *, with_scheduler: bool) -> None:
    """Run a worker in this process until it stops (`broker.run()`, a forked worker): a broker
    that cannot be reached or is misconfigured is one line on stderr and exit code 2."""
    install_uvloop()
    try:
        asyncio.run(run_worker(broker, options, with_scheduler=with_scheduler))
    except ConveyorError as exc:
        print(f"conveyor: error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
