"""Soft time limits for async tasks: `SoftTimeLimitExceeded` raised at the task's current await.

asyncio can only cancel a task; `SoftLimited` drives the task's coroutine itself and, when the
soft limit's cancellation reaches it, throws `SoftTimeLimitExceeded` into the coroutine instead,
so `except SoftTimeLimitExceeded:` inside the task works as in Celery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from conveyor.errors import SoftTimeLimitExceeded

__all__ = ["SoftLimited", "run_soft_limited"]

_SOFT = "conveyor-soft-time-limit"


class SoftLimited:
    """An awaitable that runs `coro` and turns the soft-limit cancellation into an exception."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = yield step
            except asyncio.CancelledError as exc:
                error = self._translate(exc)
            except BaseException as exc:
                error = exc

    @staticmethod
    def _translate(exc: asyncio.CancelledError) -> BaseException:
        if exc.args and exc.args[0] == _SOFT:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return SoftTimeLimitExceeded("soft time limit exceeded")
        return exc


async def run_soft_limited(coro: Coroutine[Any, Any, Any], soft_timeout: float) -> Any:
    """Await `coro`; after `soft_timeout` seconds it gets `SoftTimeLimitExceeded`."""
    task = asyncio.current_task()
    assert task is not None
    handle = asyncio.get_running_loop().call_later(soft_timeout, task.cancel, _SOFT)
    try:
        return await SoftLimited(coro)
    finally:
        handle.cancel()
