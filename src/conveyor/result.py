"""What a caller gets back: `TaskStatus`, `TaskResult` and the `TaskHandle` that reads them."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from conveyor.errors import ResultTimeout, TaskError, remote_error

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["TaskHandle", "TaskResult", "TaskStatus"]

R = TypeVar("R")


class TaskStatus(enum.StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for statuses a task never leaves."""
        return self in _FINAL


_FINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


_NO_VALUE: Any = None


class TaskResult(msgspec.Struct, Generic[R], kw_only=True, omit_defaults=True):
    """The outcome of one task: its return value or its error, and how the run went.

    Attributes:
        task_id: the task's id.
        task_name: the registered name.
        status: succeeded, failed or cancelled.
        return_value: what the function returned (None when it failed).
        error_type: qualified name of the exception when it failed.
        error_module: the module that defines it.
        error_message: the exception's message.
        error_traceback: the worker's formatted traceback.
        execution_time: seconds the last attempt ran.
        labels: the message's labels.
        attempts: how many attempts ran.
        started_at: when the last attempt started (UTC).
        finished_at: when it ended (UTC).
        worker: "host:pid" of the worker that ran it.
    """

    task_id: str
    task_name: str
    status: TaskStatus
    return_value: R = msgspec.field(default=_NO_VALUE)
    error_type: str | None = None
    error_module: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    execution_time: float = 0.0
    labels: dict[str, Any] = msgspec.field(default_factory=dict)
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None

    @property
    def is_err(self) -> bool:
        """True when the task failed or was cancelled."""
        return self.status is not TaskStatus.SUCCEEDED

    @property
    def error(self) -> TaskError | None:
        """The task's failure, or None when it succeeded.

        An instance of the task's own exception class (and of `TaskError`) when this process
        has imported the module that defines it; else a plain `TaskError`. Either way it has
        `exc_type`, `message` and `traceback`.
        """
        if not self.is_err:
            return None
        return remote_error(
            self.error_type or "Error",
            self.error_message or "",
            self.error_traceback,
            self.error_module,
        )

    def raise_for_error(self) -> TaskResult[R]:
        """Return self when the task succeeded, else raise its failure (see `error`)."""
        error = self.error
        if error is not None:
            raise error
        return self


class TaskHandle(Generic[R]):
    """A reference to a sent task: read its status, progress, stream and result, or cancel it."""

    __slots__ = ("_broker", "_return_type", "task_id", "task_name")

    def __init__(
        self,
        broker: Broker,
        task_id: str,
        task_name: str | None = None,
        return_type: Any = Any,
    ) -> None:
        self._broker = broker
        self._return_type = return_type
        self.task_id = task_id
        self.task_name = task_name

    def __repr__(self) -> str:
        return f"TaskHandle(task_id={self.task_id!r}, task_name={self.task_name!r})"

    async def get_result(self) -> TaskResult[R] | None:
        """Return the result if the task has finished, else None (does not wait)."""
        data = await self._broker.result_backend.get_result(self.task_id)
        return None if data is None else self._decode(data)

    async def wait_result(
        self, timeout: float | None = None, *, check_interval: float | None = None
    ) -> TaskResult[R]:
        """Wait for the task to finish and return its result.

        `timeout=None` (or negative, as Taskiq writes it) waits as long as it takes.
        `check_interval` is accepted for Taskiq's code: the wait ends when the result is stored.

        Raises:
            ResultTimeout: the task did not finish within `timeout` seconds.
        """
        if timeout is not None and timeout < 0:
            timeout = None
        await self._broker.ensure_started()
        data = await self._broker.result_backend.wait_result(self.task_id, timeout)
        if data is None:
            raise ResultTimeout(f"task {self.task_id} did not finish within {timeout} s")
        return self._decode(data)

    async def is_ready(self) -> bool:
        """True when the task has a final result."""
        return await self._broker.result_backend.get_result(self.task_id) is not None

    async def status(self) -> TaskStatus | None:
        """Return the task's status, or None when nothing is known of this id."""
        return await self._broker.task_status(self.task_id)

    async def get_progress(self) -> Any:
        """Return the last progress the task reported with `Context.set_progress`, or None."""
        return await self._broker.get_progress(self.task_id)

    async def cancel(self) -> bool:
        """Cancel the task: drop it if still queued, stop it if running.

        Returns True when it was removed from the queue before it ran.
        """
        return await self._broker.cancel(self.task_id)

    async def stream(self, poll: float = 0.05) -> AsyncIterator[Any]:
        """Yield the items of a generator task as they are produced.

        Raises:
            TaskError: after the last item, when the task failed.
        """
        await self._broker.ensure_started()
        backend, decode = self._broker.result_backend, self._broker.decode_value
        offset, pause = 0, 0.001
        while True:
            offset, items, closed = await backend.read_stream(self.task_id, offset)
            for item in items:
                yield decode(item)
            if closed:
                break
            if items:
                pause = 0.001
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, poll)
        result = await self.get_result()
        if result is not None:
            result.raise_for_error()

    def _decode(self, data: bytes) -> TaskResult[R]:
        return self._broker.decode_result(data, self._return_type)


def utcnow() -> datetime:
    """Aware UTC now, for result timestamps."""
    return datetime.fromtimestamp(time.time(), UTC)
