"""The result-store contract: encoded results, progress and generator streams by task id.

Stores hold bytes; the broker encodes `TaskResult` with its serializer. `wait` must not spin:
engines that can block (Redis) block, the others back off between reads.
"""

from __future__ import annotations

import abc
import asyncio
import time

__all__ = ["ResultBackend", "StreamChunk"]

#: Items of a generator task read from `read_stream`: (next offset, items, finished).
StreamChunk = tuple[int, list[bytes], bool]


class ResultBackend(abc.ABC):
    """Keeps each task's final result, its progress, its running state and its stream."""

    #: Seconds a result is kept when the task sets no `result_ttl`; None keeps it forever.
    default_ttl: float | None = 24 * 3600.0

    async def startup(self) -> None:
        """Open connections; safe to call twice."""

    async def shutdown(self) -> None:
        """Close connections."""

    @abc.abstractmethod
    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the final result of a task, replacing any earlier one."""

    @abc.abstractmethod
    async def get_result(self, task_id: str) -> bytes | None:
        """Return the stored result, or None when there is none (yet)."""

    async def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Return the result once stored, or None after `timeout` seconds.

        The default polls with a growing pause (1 ms to 50 ms); engines that can block override.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            data = await self.get_result(task_id)
            if data is not None:
                return data
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                pause = min(pause, left)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    @abc.abstractmethod
    async def delete(self, task_id: str) -> None:
        """Forget everything stored for a task."""

    @abc.abstractmethod
    async def set_state(self, task_id: str, state: str, ttl: float | None) -> None:
        """Record a non-final state ("running", "retrying") while the task has no result."""

    @abc.abstractmethod
    async def get_state(self, task_id: str) -> str | None:
        """Return the last state recorded with `set_state`, or None."""

    @abc.abstractmethod
    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report of a running task."""

    @abc.abstractmethod
    async def get_progress(self, task_id: str) -> bytes | None:
        """Return the latest progress report, or None."""

    @abc.abstractmethod
    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append items produced by a generator task."""

    @abc.abstractmethod
    async def reset_stream(self, task_id: str) -> None:
        """Drop a task's stream: a redelivered generator task starts its stream afresh."""

    @abc.abstractmethod
    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark a task's stream as finished; readers stop after the last item."""

    @abc.abstractmethod
    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Return items from `offset` on, the offset to read next, and whether it is closed."""
