"""The completion recorder: how "done" is counted for a variant that stores no result.

taskiq, Celery and Dramatiq store no result by default, so with their defaults the harness has
nothing to observe per task. For those variants (option `done=recorder`, `bench.variants`)
each task body ends by writing one command to the harness's private Redis
(`BENCH_RECORDER_URL`): `INCR` of a counter for `noop` and `sleepy`, `RPUSH` of its latency
sample for `stamp`. The driver counts completions as the counter plus the length of that list
and reads the samples from the list. conveyor's `-recorded` rows do the same while still
storing their results, so a peer with its defaults and conveyor are counted the same way.

Invariants: one recorder write per task run, at the end of the task body (after `stamp` took
its start time, so the write is not in the latency); "done" for N tasks sent is the count
reaching N (a redelivered task would count twice: none is redelivered in these scenarios);
the keys live in the Redis the harness flushes before every driver session, so each session
counts from zero. redis-py is imported only when the recorder is on, so a worker without it
does not load it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DONE", "ENV", "STAMPS", "Counter", "arecord", "enabled", "record"]

#: The environment variable naming the recorder's Redis; unset: no recording.
ENV = "BENCH_RECORDER_URL"
DONE = "bench:recorder:done"
STAMPS = "bench:recorder:stamps"

_sync: Any = None
_async: Any = None


def enabled() -> bool:
    """True in a worker whose completions the recorder counts."""
    return ENV in os.environ


def record(sample: float | None = None) -> None:
    """Count one completion from a sync task (a thread of Celery or Dramatiq)."""
    global _sync
    if _sync is None:
        import redis

        _sync = redis.Redis.from_url(os.environ[ENV])
    if sample is None:
        _sync.incr(DONE)
    else:
        _sync.rpush(STAMPS, sample)


async def arecord(sample: float | None = None) -> None:
    """Count one completion from an async task (conveyor, taskiq)."""
    global _async
    if _async is None:
        import redis.asyncio

        _async = redis.asyncio.Redis.from_url(os.environ[ENV])
    if sample is None:
        await _async.incr(DONE)
    else:
        await _async.rpush(STAMPS, sample)


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
