"""The scenarios, written once against `Adapter`, so every library is timed the same way.

Definitions (also in bench/README.md):

- enqueue single: `enqueue` sequential awaited sends of `noop`, no worker running; tasks/s.
- enqueue bulk: as many through the bulk API in calls of `bulk_batch` (in a session of its
  own, on an emptied Redis); tasks/s.
- drain: the tasks of "enqueue single" wait in the queue with no worker running; the clock
  starts just before the worker process is spawned and stops when every result is observed
  stored; tasks/s = count / that time (worker start-up included).
- sleep burst: with the worker warm and idle, the clock starts before the first send of
  `sleep` `sleepy` tasks and stops when every result is observed stored; seconds. Sent as
  fast as the client allows: the bulk API, else single sends, `CHECK_BATCH` in flight.
- latency: `stamp(time.time())` sent at a steady rate with the worker warm; each task
  returns its start time minus the stamp; p50 and p99 in ms.

"Every result observed": the last-sent task's result is polled every `poll` seconds; once it
is stored, all the others are checked (not timed when all are there; when some are missing,
the clock runs until the last of them is seen). For a variant counted by the recorder
(`bench.recorder`, its tasks store no result) "done" is the recorder's count reaching every
task sent, polled every `poll` seconds, and the latency samples are those the tasks recorded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from bench.peers.base import CHECK_BATCH, Adapter, Handle
from bench.protocol import Counts
from bench.worker_proc import WorkerProcess

__all__ = [
    "drain",
    "enqueue_bulk",
    "enqueue_single",
    "latency",
    "percentile",
    "send_bulk",
    "send_burst",
    "sleep_burst",
    "wait_stored",
]


class ScenarioTimeout(TimeoutError):
    """A scenario ran past the run's per-scenario limit."""


async def send_bulk(adapter: Adapter, task: str, count: int, batch: int) -> list[Handle]:
    """Send `count` calls of `task` through the bulk API, `batch` per call."""
    handles: list[Handle] = []
    for start in range(0, count, batch):
        handles += await adapter.send_many(task, min(batch, count - start))
    return handles


async def send_burst(adapter: Adapter, task: str, count: int, batch: int) -> list[Handle]:
    """Send `count` calls as fast as the client allows: the bulk API, else concurrent singles."""
    if adapter.bulk_api is not None:
        return await send_bulk(adapter, task, count, batch)
    handles: list[Handle] = []
    for start in range(0, count, CHECK_BATCH):
        size = min(CHECK_BATCH, count - start)
        handles += await asyncio.gather(*(adapter.send(task) for _ in range(size)))
    return handles


async def enqueue_single(adapter: Adapter, counts: Counts) -> tuple[float, list[Handle]]:
    """Tasks/s of sequential awaited single sends of `noop`, and their handles."""
    deadline = time.monotonic() + counts.timeout
    handles: list[Handle] = []
    start = time.perf_counter()
    for i in range(counts.enqueue):
        handles.append(await adapter.send("noop"))
        if i % 1000 == 0 and time.monotonic() > deadline:
            raise ScenarioTimeout(f"sent only {i} of {counts.enqueue} in {counts.timeout:g} s")
    return counts.enqueue / (time.perf_counter() - start), handles


async def enqueue_bulk(adapter: Adapter, counts: Counts) -> float:
    """Tasks/s through the bulk API, `bulk_batch` tasks per call."""
    start = time.perf_counter()
    handles = await send_bulk(adapter, "noop", counts.enqueue, counts.bulk_batch)
    elapsed = time.perf_counter() - start
    if len(handles) != counts.enqueue:
        raise RuntimeError(f"the bulk API returned {len(handles)} handles for {counts.enqueue}")
    return counts.enqueue / elapsed


async def wait_stored(
    adapter: Adapter, handles: Sequence[Handle], worker: WorkerProcess, counts: Counts
) -> float:
    """Wait until every handle's result is stored; return `perf_counter()` when it was seen."""
    deadline = time.monotonic() + counts.timeout
    if adapter.counter is not None:
        return await adapter.counter.wait(
            len(handles), counts.poll, lambda left: _check(worker, deadline, left, counts)
        )
    last = handles[-1]
    while not await adapter.is_done(last):
        _check(worker, deadline, len(handles), counts)
        await asyncio.sleep(counts.poll)
    seen = time.perf_counter()
    missing = await adapter.missing(handles[:-1])
    while missing:
        _check(worker, deadline, len(missing), counts)
        await asyncio.sleep(counts.poll)
        missing = await adapter.missing(missing)
        seen = time.perf_counter()
    return seen


def _check(worker: WorkerProcess, deadline: float, left: int, counts: Counts) -> None:
    worker.check()
    if time.monotonic() > deadline:
        raise ScenarioTimeout(f"{left} result(s) still missing after {counts.timeout:g} s")


async def drain(
    adapter: Adapter, worker: WorkerProcess, handles: Sequence[Handle], counts: Counts
) -> float:
    """Seconds from spawning the worker to every already-queued task's result being stored."""
    start = time.perf_counter()
    await worker.start()
    return await wait_stored(adapter, handles, worker, counts) - start


async def sleep_burst(adapter: Adapter, worker: WorkerProcess, counts: Counts) -> float:
    """Seconds from the first send of `sleep` sleepy tasks to all their results stored."""
    worker.check()
    start = time.perf_counter()
    handles = await send_burst(adapter, "sleepy", counts.sleep, counts.bulk_batch)
    return await wait_stored(adapter, handles, worker, counts) - start


async def latency(
    adapter: Adapter, worker: WorkerProcess, counts: Counts
) -> tuple[float, float, float]:
    """p50 and p99 enqueue-to-start latency in ms, and the send rate actually reached."""
    worker.check()
    handles: list[Handle] = []
    start = time.perf_counter()
    for i in range(counts.latency):
        pause = start + i / counts.latency_rate - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        handles.append(await adapter.send("stamp", time.time()))
    achieved = counts.latency / max(time.perf_counter() - start, 1e-9)
    await wait_stored(adapter, handles, worker, counts)
    if adapter.counter is not None:
        samples = await adapter.counter.samples()
        if len(samples) != len(handles):
            raise RuntimeError(f"{len(samples)} latency samples recorded for {len(handles)} sent")
    else:
        samples = [float(await adapter.value(h)) for h in handles]
    delays = sorted(s * 1000 for s in samples)
    return percentile(delays, 50), percentile(delays, 99), achieved


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
