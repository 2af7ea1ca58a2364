"""The worker loop: lease messages up to free capacity, run them, keep their leases alive,
watch for cancel requests, publish heartbeats, and drain on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from conveyor.engines.base import Delivery
from conveyor.errors import BrokerError
from conveyor.options import DEFAULT_QUEUE
from conveyor.state import Heartbeat
from conveyor.worker.banner import start_lines
from conveyor.worker.leases import LeaseKeeper
from conveyor.worker.outage import Outage
from conveyor.worker.outcome import worker_name
from conveyor.worker.pools import ProcessPool, new_thread_pool
from conveyor.worker.runner import Run, Runner

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["Worker", "WorkerOptions"]

log = logging.getLogger("conveyor.worker")

HEARTBEAT_SECONDS = 5.0
#: Seconds between looks at whether the running tasks changed (then a heartbeat goes out).
BEAT_CHECK_SECONDS = 1.0
STATS_SECONDS = 1.0
CANCEL_CHECK_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """The options of one worker process (the CLI's flags).

    Attributes:
        queues: queues to consume, in no particular order (priority is per queue).
        max_async_tasks: messages run at once (async tasks plus those waiting on threads).
        max_threads: threads for sync tasks.
        max_tasks_per_child: exit after this many messages (the supervisor starts a new one).
        max_memory_mb: exit gracefully when the process's RSS passes this.
        shutdown_timeout: seconds running tasks get to finish after SIGTERM.
        receive_timeout: longest wait of one receive call; bounds how fast a stop is seen.
        sync_executor: where sync tasks without an `executor` label run, "thread" or
            "process".
        max_processes: the process pool's size (the number of CPUs when None).
    """

    queues: Sequence[str] = (DEFAULT_QUEUE,)
    max_async_tasks: int = 100
    max_threads: int = 10
    max_tasks_per_child: int | None = None
    max_memory_mb: float | None = None
    shutdown_timeout: float = 30.0
    receive_timeout: float = 0.5
    sync_executor: str = "thread"
    max_processes: int | None = None


class Worker:
    """Consumes a broker's queues in this process until `stop` is set."""

    def __init__(self, broker: Broker, options: WorkerOptions | None = None) -> None:
        self.broker = broker
        self.options = options or WorkerOptions()
        self.name = worker_name()
        self.processed = 0
        self._running: dict[str, Run] = {}
        self._slot_free = asyncio.Event()
        self._threads = new_thread_pool(self.options.max_threads)
        self._processes = ProcessPool(self.options.max_processes or max(os.cpu_count() or 1, 1))
        self.runner = Runner(
            broker, self._threads, self._processes, sync_executor=self.options.sync_executor
        )
        self._started_at = time.time()
        self.stop_reason = ""
        self._receive_failures = 0
        self._beating = Outage("publish heartbeat")

    async def run(self, stop: asyncio.Event, *, manage_broker: bool = True) -> None:
        """Consume until `stop` is set or a recycling limit is reached, then drain.

        With `manage_broker` the worker starts the broker and shuts it down at the end.
        """
        await (self.broker.startup() if manage_broker else self.broker.ensure_started())
        background = [
            asyncio.create_task(self._lease_loop(), name="conveyor-leases"),
            asyncio.create_task(self._heartbeat_loop(stop), name="conveyor-heartbeat"),
        ]
        stats_done = asyncio.Event()
        stats = asyncio.create_task(self._stats_loop(stats_done), name="conveyor-stats")
        for level, line in start_lines(self.broker, self.options.queues, self.name):
            log.log(level, "%s", line)
        try:
            await self._consume(stop)
        finally:
            await self._drain()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            stats_done.set()  # not cancelled: an `incr` cut short could be counted twice
            await stats
            await self._forget_heartbeat()
            self.close_pools()
            if manage_broker:
                await self.broker.shutdown()
        log.info(
            "worker %s stopped (%s), %d tasks run", self.name, self.stop_reason, self.processed
        )

    def close_pools(self) -> None:
        """Shut down the thread and process pools (at the end of `run`, or for a worker whose
        event loop ended before it could stop)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._processes.shutdown()

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._limit_reached():
                return
            free = self._free_slots()
            if free <= 0:
                await self._wait_for_slot(stop)
                continue
            deliveries = await self._receive(free, stop)
            if stop.is_set():  # the stop came while receiving: take no more work
                for delivery in deliveries:
                    await self._hand_back(delivery)
                break
            for delivery in deliveries:
                self._start(delivery)
            if deliveries:  # let them start before this loop's next receive is prepared
                await asyncio.sleep(0)
        self.stop_reason = self.stop_reason or "stopped"

    def _free_slots(self) -> int:
        """How many messages to take now: free capacity, within `max_tasks_per_child`."""
        free = self.options.max_async_tasks - len(self._running)
        limit = self.options.max_tasks_per_child
        if limit is not None:
            free = min(free, limit - self.processed - len(self._running))
        return free

    async def _receive(self, count: int, stop: asyncio.Event) -> list[Delivery]:
        """Receive, riding out broker errors with a growing pause (the outage is logged once)."""
        options = self.options
        try:
            deliveries = await self.broker.transport.receive(
                options.queues, count, options.receive_timeout
            )
        except Exception as exc:  # an outage: keep the worker, wait, try again
            self._receive_failures += 1
            pause = min(0.1 * 2**self._receive_failures, 10.0)
            log_at = logging.WARNING if self._receive_failures == 1 else logging.DEBUG
            log.log(log_at, "receive failed (%s); retrying in %.1f s", _one_line(exc), pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            return []
        if self._receive_failures:
            log.warning("receive works again after %d failure(s)", self._receive_failures)
            self._receive_failures = 0
        return deliveries

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        self._slot_free.clear()
        waiters = [
            asyncio.ensure_future(self._slot_free.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    def _limit_reached(self) -> bool:
        limit = self.options.max_tasks_per_child
        if limit is not None and self.processed + len(self._running) >= limit:
            self.stop_reason = f"max tasks per child ({limit})"
            return True
        return bool(self.stop_reason)

    def _start(self, delivery: Delivery) -> None:
        run = Run(delivery)
        run.task = asyncio.create_task(self._run_one(run), name=f"conveyor-task-{delivery.task_id}")
        self._running[delivery.task_id] = run

    async def _run_one(self, run: Run) -> None:
        ran = True
        try:
            ran = await self.runner.handle(run)
        except asyncio.CancelledError:
            await self._hand_back(run.delivery)
        except BrokerError as exc:  # the broker is away: the message comes back with its lease
            log.warning(
                "%s: the broker failed (%s); it runs again when its lease ends",
                run.delivery.task_id,
                exc,
            )
        except Exception:  # a broken middleware: the lease will expire
            log.exception("worker error while running %s", run.delivery.task_id)
        finally:
            self._running.pop(run.delivery.task_id, None)
            self.processed += ran
            self._slot_free.set()

    async def _hand_back(self, delivery: Delivery) -> None:
        try:
            await self.broker.transport.release(delivery)
        except Exception:  # the lease expires and the message comes back anyway
            log.exception("could not hand back %s", delivery.task_id)

    async def _drain(self) -> None:
        if not self._running:
            return
        pending = [run.task for run in self._running.values() if run.task is not None]
        log.info(
            "waiting up to %.1f s for %d running task(s)",
            self.options.shutdown_timeout,
            len(pending),
        )
        _, late = await asyncio.wait(pending, timeout=self.options.shutdown_timeout)
        for run in list(self._running.values()):
            run.cancel("shutdown")
        if late:
            await asyncio.wait(late, timeout=5.0)

    # -- background loops --------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Every tick: pass on cancel requests. Every lease/3: extend running leases, from a
        thread of its own (`LeaseKeeper`) when the transport allows, so a task that blocks
        this loop keeps its lease."""
        transport = self.broker.transport
        extend_every = min(max(transport.lease_seconds / 3, 0.1), 5.0)
        keeper = None
        if transport.thread_safe:
            keeper = LeaseKeeper(transport, self._deliveries, extend_every)
            keeper.start()
        try:
            await self._tick_leases(extend_every, keeper is None)
        finally:
            if keeper is not None:
                await asyncio.to_thread(keeper.stop)

    def _deliveries(self) -> list[Delivery]:
        """The deliveries running now (read from the lease keeper's thread too)."""
        return [run.delivery for run in list(self._running.values())]

    async def _tick_leases(self, extend_every: float, extend_here: bool) -> None:
        tick = min(extend_every, CANCEL_CHECK_SECONDS)
        last_extend = time.monotonic()
        extending, reading = Outage("extend leases"), Outage("read cancel requests")
        while True:
            await asyncio.sleep(tick)
            runs = list(self._running.values())
            if not runs:
                continue
            if extend_here and time.monotonic() - last_extend >= extend_every - tick / 2:
                last_extend = time.monotonic()
                try:
                    await self.broker.transport.extend([run.delivery for run in runs])
                except Exception as exc:  # a broker blip: try again next tick, leases have slack
                    extending.failed(exc)
                else:
                    extending.worked()
            try:
                wanted = await self.broker.state.cancel_requested(
                    [run.delivery.task_id for run in runs]
                )
            except Exception as exc:
                reading.failed(exc)
                continue
            reading.worked()
            for run in runs:
                if run.delivery.task_id in wanted and run.cancel_reason is None:
                    log.info("cancelling %s on request", run.delivery.task_id)
                    run.cancel("user")

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        """Beat every `HEARTBEAT_SECONDS`, and within `BEAT_CHECK_SECONDS` of a change in the
        running tasks, so `conveyor inspect active` shows a task about a second after it starts
        (one small write a second at most)."""
        process = psutil.Process()
        beaten: set[str] | None = None
        last = 0.0
        while True:
            now = time.monotonic()
            if beaten is None or now - last >= HEARTBEAT_SECONDS or self._running.keys() != beaten:
                beaten, last = set(self._running), now
                await self._beat(process, stop)
            await asyncio.sleep(BEAT_CHECK_SECONDS)

    async def _beat(self, process: psutil.Process, stop: asyncio.Event) -> None:
        rss_mb = process.memory_info().rss / 2**20
        limit = self.options.max_memory_mb
        if limit is not None and rss_mb > limit and not self.stop_reason:
            self.stop_reason = f"memory {rss_mb:.0f} MB over {limit:.0f} MB"
            log.warning("worker %s: %s, restarting", self.name, self.stop_reason)
            stop.set()
        try:
            await self.broker.state.beat(self._heartbeat(rss_mb), HEARTBEAT_SECONDS * 3)
        except Exception as exc:
            self._beating.failed(exc)
        else:
            self._beating.worked()

    def _heartbeat(self, rss_mb: float) -> Heartbeat:
        runs = list(self._running.items())
        return Heartbeat(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=list(self.options.queues),
            running=[task_id for task_id, _ in runs],
            running_names=[run.task_name for _, run in runs],
            processed=self.processed,
            started=self._started_at,
            seen=time.time(),
            rss_mb=round(rss_mb, 1),
            concurrency=self.options.max_async_tasks,
            counters=dict(self.runner.stats.totals),
        )

    async def _stats_loop(self, done: asyncio.Event) -> None:
        """Publish counters and recent tasks every `STATS_SECONDS`, off the tasks' path, and a
        last time when `done` is set."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), STATS_SECONDS)
            try:
                await self.runner.stats.flush(self.broker.state)
            except Exception:  # kept pending; the next flush tries again
                log.debug("could not publish stats", exc_info=True)

    async def _forget_heartbeat(self) -> None:
        try:
            await self.broker.state.forget_worker(self.name)
        except Exception:
            log.debug("could not delete heartbeat", exc_info=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
