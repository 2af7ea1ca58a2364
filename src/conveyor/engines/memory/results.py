"""The in-process result store, for tests, demos and `InMemoryBroker`.

Results are kept least recently used first out once there are more than `max_stored_results`;
a result leaving takes its task's progress and stream with it. `wait_result` sleeps on an
event that `set_result` sets: no polling.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from conveyor.engines.base import ResultBackend, StreamChunk
from conveyor.engines.loops import wake
from conveyor.errors import ConfigurationError

__all__ = ["MemoryResultBackend"]

V = TypeVar("V")

_SWEEP_EVERY = 60.0


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float | None

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(slots=True)
class _Stream:
    items: list[bytes] = field(default_factory=list)
    closed: bool = False


def _expiry(ttl: float | None) -> float | None:
    return None if ttl is None else time.monotonic() + ttl


def _live(table: dict[str, _Entry[V]], key: str) -> V | None:
    entry = table.get(key)
    if entry is None:
        return None
    if not entry.live(time.monotonic()):
        del table[key]
        return None
    return entry.value


class MemoryResultBackend(ResultBackend):
    """Results, progress and streams in this process's memory.

    Args:
        max_stored_results: how many results to keep; the least recently stored or read go
            first. A negative number keeps every result.
        default_ttl: seconds a result is kept when the task sets no `result_ttl`.
    """

    def __init__(
        self, max_stored_results: int = 1000, *, default_ttl: float | None = 24 * 3600.0
    ) -> None:
        if max_stored_results == 0:
            raise ConfigurationError("max_stored_results must be positive (or negative: no cap)")
        self.max_stored_results = max_stored_results
        self.default_ttl = default_ttl
        self._results: OrderedDict[str, _Entry[bytes]] = OrderedDict()
        self._progress: dict[str, _Entry[bytes]] = {}
        self._streams: dict[str, _Entry[_Stream]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._last_sweep = time.monotonic()

    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the final result, wake its waiters, and drop the oldest beyond the cap."""
        self._sweep()
        self._results[task_id] = _Entry(data, _expiry(ttl))
        self._results.move_to_end(task_id)
        while 0 < self.max_stored_results < len(self._results):
            oldest, _ = self._results.popitem(last=False)
            self._forget_rest(oldest)
        for future in list(self._waiters.pop(task_id, ())):  # waiters leave the set as they wake
            wake(future)

    async def get_result(self, task_id: str) -> bytes | None:
        """Return the stored result, or None."""
        data = _live(self._results, task_id)
        if data is not None:
            self._results.move_to_end(task_id)
        return data

    async def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Return the result once stored, or None after `timeout` seconds; wakes on store."""
        try:
            async with asyncio.timeout(timeout):
                while (data := await self.get_result(task_id)) is None:
                    await self._stored(task_id)
                return data
        except TimeoutError:
            return None

    async def _stored(self, task_id: str) -> None:
        """Sleep until `set_result` is called for this task."""
        future = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(task_id, set())
        waiting.add(future)
        try:
            await future
        finally:
            waiting.discard(future)
            if not waiting and self._waiters.get(task_id) is waiting:
                del self._waiters[task_id]

    async def delete(self, task_id: str) -> None:
        """Forget the result, progress and stream of a task."""
        self._results.pop(task_id, None)
        self._forget_rest(task_id)

    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report."""
        self._sweep()
        self._progress[task_id] = _Entry(data, _expiry(ttl))

    async def get_progress(self, task_id: str) -> bytes | None:
        """Return the latest progress report, or None."""
        return _live(self._progress, task_id)

    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append items to a task's stream; each push renews its expiry."""
        stream = self._stream(task_id, ttl)
        stream.items.extend(items)

    async def reset_stream(self, task_id: str) -> None:
        """Drop a task's stream."""
        self._streams.pop(task_id, None)

    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark a task's stream as finished."""
        self._stream(task_id, ttl).closed = True

    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Return items from `offset` on, the next offset, and whether the stream is closed."""
        stream = _live(self._streams, task_id)
        if stream is None:
            return offset, [], False
        items = stream.items[offset:]
        return offset + len(items), items, stream.closed

    def _stream(self, task_id: str, ttl: float | None) -> _Stream:
        self._sweep()
        stream = _live(self._streams, task_id) or _Stream()
        self._streams[task_id] = _Entry(stream, _expiry(ttl))
        return stream

    def _forget_rest(self, task_id: str) -> None:
        self._progress.pop(task_id, None)
        self._streams.pop(task_id, None)

    def _sweep(self) -> None:
        """Drop expired entries now and then, so tasks nobody reads do not pile up."""
        now = time.monotonic()
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        for table in (self._results, self._progress, self._streams):
            for key in [k for k, entry in table.items() if not entry.live(now)]:
                del table[key]
