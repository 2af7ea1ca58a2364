"""The completion recorder: how "done" is counted for a variant that stores no result.

taskiq, Celery and Dramatiq store no result by default, so with their defaults the harness has
nothing to observe per task. For those variants (option `done=recorder`, `bench.variants`)
each task body ends with `record()`, which counts the completion in the worker process; a
flusher thread adds the counts to the harness's private Redis (`BENCH_RECORDER_URL`) a few
milliseconds later, in one round trip for every completion since the last one: `INCRBY` of a
counter for `noop` and `sleepy`, `RPUSH` of the latency samples for `stamp`. The driver counts
completions as the counter plus the length of that list and reads the samples from the list.
conveyor's `-recorded` rows do the same while still storing their results, so a peer with its
defaults and conveyor are counted the same way.

Why batched: a round trip per task (an awaited redis-py `INCR`, ~0.2 ms of CPU) cost conveyor's
drain half its rate and the peers less, since a fixed cost weighs most on the fastest. Counting
in memory costs every library the same ~1 us; the flush runs beside the tasks and waits at most
`FLUSH_SECONDS` before a count is visible, which adds at most that much to a drain's time.

Invariants: one `record()` per task run, at the end of the task body (after `stamp` took its
start time, so the write is not in the latency); every recorded completion reaches Redis within
`FLUSH_SECONDS` of `record()` while the process lives and Redis answers (a failed flush keeps
its counts, says so on stderr and tries again); "done" for N tasks sent is the count
reaching N (a redelivered task would count twice: none is redelivered in these scenarios); the
keys live in the Redis the harness flushes before every driver session, so each session counts
from zero. The flusher is per process (started on the first `record()` after a fork), so
Celery's prefork children each flush their own. redis-py is imported only when the recorder
is on, so a worker without it does not load it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DONE", "ENV", "FLUSH_SECONDS", "STAMPS", "Counter", "enabled", "record"]

#: The environment variable naming the recorder's Redis; unset: no recording.
ENV = "BENCH_RECORDER_URL"
DONE = "bench:recorder:done"
STAMPS = "bench:recorder:stamps"
#: How long completions gather before one flush writes them all.
FLUSH_SECONDS = 0.002
#: How long a flush that failed (Redis away) waits before it tries again, its counts kept.
RETRY_SECONDS = 0.1


def enabled() -> bool:
    """True in a worker whose completions the recorder counts."""
    return ENV in os.environ


class _Flusher:
    """This process's pending completions and the thread that writes them to Redis."""

    def __init__(self) -> None:
        import redis

        self.pid = os.getpid()
        self.client = redis.Redis.from_url(os.environ[ENV])
        self.lock = threading.Lock()
        self.pending = threading.Event()
        self.done = 0
        self.samples: list[float] = []
        threading.Thread(target=self._run, name="bench-recorder", daemon=True).start()

    def add(self, sample: float | None) -> None:
        with self.lock:
            if sample is None:
                self.done += 1
            else:
                self.samples.append(sample)
        self.pending.set()

    def _run(self) -> None:
        while True:
            self.pending.wait()
            time.sleep(FLUSH_SECONDS)
            self.pending.clear()
            with self.lock:
                done, self.done = self.done, 0
                samples, self.samples = self.samples, []
            pipe = self.client.pipeline(transaction=False)
            if done:
                pipe.incrby(DONE, done)
            if samples:
                pipe.rpush(STAMPS, *samples)
            try:
                pipe.execute()
            except Exception as exc:  # the thread lives on; the counts go with the next flush
                with self.lock:
                    self.done += done
                    self.samples[:0] = samples
                print(f"bench recorder: {exc}; retrying in {RETRY_SECONDS} s", file=sys.stderr)
                time.sleep(RETRY_SECONDS)
                self.pending.set()


_flusher: _Flusher | None = None


def record(sample: float | None = None) -> None:
    """Count one completion (with its latency sample for `stamp`); never waits for Redis."""
    global _flusher
    if _flusher is None or _flusher.pid != os.getpid():
        _flusher = _Flusher()
    _flusher.add(sample)


class Counter:
    """The driver's side: completions counted so far, waited for scenario by scenario.

    Each scenario waits for all its tasks (`wait`): the count must reach every task sent in the
    session so far, so `expected` grows by each scenario's count.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.expected = 0
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(self.url)
        return self._client

    async def count(self) -> int:
        """Completions recorded so far (one round trip)."""
        pipe = self._redis().pipeline(transaction=False)
        pipe.get(DONE)
        pipe.llen(STAMPS)
        done, stamps = await pipe.execute()
        return int(done or 0) + int(stamps)

    async def wait(self, sent: int, poll: float, check: Callable[[int], None]) -> float:
        """Wait until the `sent` tasks of this scenario are counted; `check(left)` is called
        between polls (it raises when the worker died or the time is up). Returns
        `perf_counter()` when the count was seen complete."""
        self.expected += sent
        while (count := await self.count()) < self.expected:
            check(self.expected - count)
            await asyncio.sleep(poll)
        return time.perf_counter()

    async def samples(self) -> list[float]:
        """Every latency sample recorded (seconds), in arrival order."""
        raw = await self._redis().lrange(STAMPS, 0, -1)
        return [float(v) for v in raw]

    async def close(self) -> None:
        """Close the connection."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
