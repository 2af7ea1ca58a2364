"""Calling the async API from synchronous code: one event-loop thread per broker.

`task.kiq_sync(...)` and `SyncTaskHandle` run their coroutines on the broker's portal thread,
so Flask, Django or a plain script can send tasks and wait for results.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.result import TaskHandle, TaskResult, TaskStatus

__all__ = ["Portal", "SyncTaskHandle", "portal_for"]

T = TypeVar("T")
R = TypeVar("R")
_lock = threading.Lock()


class Portal:
    """A daemon thread running an event loop, for coroutines called from sync code."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-portal", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the portal's loop and block until it returns."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Stop the loop and join the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def portal_for(broker: Broker) -> Portal:
    """The broker's portal, started on first use."""
    with _lock:
        portal: Portal | None = getattr(broker, "_portal", None)
        if portal is None:
            portal = Portal()
            broker._portal = portal
        return portal


class SyncTaskHandle(Generic[R]):
    """The blocking twin of `TaskHandle`, returned by `kiq_sync`."""

    def __init__(self, handle: TaskHandle[R]) -> None:
        self.handle = handle
        self.task_id = handle.task_id
        self._portal = portal_for(handle._broker)

    def __repr__(self) -> str:
        return f"SyncTaskHandle(task_id={self.task_id!r})"

    def wait_result(self, timeout: float | None = None) -> TaskResult[R]:
        """Block until the task finishes; raise `ResultTimeout` after `timeout` seconds."""
        return self._portal.call(self.handle.wait_result(timeout))

    def get_result(self) -> TaskResult[R] | None:
        """The result if the task has finished, else None."""
        return self._portal.call(self.handle.get_result())

    def is_ready(self) -> bool:
        """True when the task has a final result."""
        return self._portal.call(self.handle.is_ready())

    def status(self) -> TaskStatus | None:
        """The task's status, or None when the id is unknown."""
        return self._portal.call(self.handle.status())

    def get_progress(self) -> Any:
        """The task's last progress report, or None."""
        return self._portal.call(self.handle.get_progress())

    def cancel(self) -> bool:
        """Cancel the task; True when it was removed before it ran."""
        return self._portal.call(self.handle.cancel())
