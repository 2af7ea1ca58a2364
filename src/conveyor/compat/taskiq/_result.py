"""Taskiq's result side: `TaskiqResult` (conveyor's `TaskResult`, with Taskiq's constructor),
`AsyncTaskiqTask` (the handle `kiq` returns, with Taskiq's `wait_result` arguments), the
`TaskProgress` a `ProgressTracker` reports, and `gather`."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor.result import TaskHandle, TaskResult, TaskStatus

__all__ = ["AsyncTaskiqTask", "TaskProgress", "TaskState", "TaskiqResult", "gather"]

R = TypeVar("R")
T = TypeVar("T")


class TaskState(enum.StrEnum):
    """A state a task reports with `ProgressTracker.set_progress`."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    FAILURE = "FAILURE"
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"


@dataclass
class TaskProgress(Generic[T]):
    """A progress report: a state and what the task says about it."""

    state: TaskState | str
    meta: T | None = None

    def to_value(self) -> dict[str, Any]:
        """The JSON value conveyor stores as the task's progress."""
        return {"state": str(self.state), "meta": self.meta}

    @classmethod
    def from_value(cls, value: Any) -> TaskProgress[Any] | Any:
        """The report a stored progress value holds, or the value when it is not one."""
        if isinstance(value, dict) and set(value) == {"state", "meta"}:
            state = value["state"]
            return cls(TaskState(state) if state in TaskState.__members__ else state, value["meta"])
        return value


class _ResultMeta(type):
    """Makes `TaskiqResult(...)` build a conveyor `TaskResult`, and every `TaskResult` count as
    a `TaskiqResult`."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, TaskResult)

    def __call__(  # builds a TaskResult, Taskiq's way
        cls,
        is_err: bool = False,
        log: str | None = None,
        return_value: Any = None,
        execution_time: float = 0.0,
        labels: dict[str, Any] | None = None,
        error: BaseException | None = None,
        *,
        task_id: str = "",
        task_name: str = "",
    ) -> TaskResult[Any]:
        failed = is_err or error is not None
        return TaskResult(
            task_id=task_id,
            task_name=task_name,
            status=TaskStatus.FAILED if failed else TaskStatus.SUCCEEDED,
            return_value=return_value,
            error_type=None if error is None else type(error).__qualname__,
            error_module=None if error is None else type(error).__module__,
            error_message=None if error is None else str(error),
            execution_time=execution_time,
            labels=labels or {},
        )

    def __getitem__(cls, item: Any) -> Any:
        return cls  # `TaskiqResult[int](...)` builds one too


if TYPE_CHECKING:

    class TaskiqResult(TaskResult[R]):
        """What a type checker sees: a `TaskResult` built with Taskiq's arguments."""

        def __init__(
            self,
            is_err: bool = False,
            log: str | None = None,
            return_value: R = ...,
            execution_time: float = 0.0,
            labels: dict[str, Any] | None = None,
            error: BaseException | None = None,
            *,
            task_id: str = "",
            task_name: str = "",
        ) -> None: ...

else:

    class TaskiqResult(metaclass=_ResultMeta):
        """Taskiq's result: conveyor's `TaskResult` (`is_err`, `return_value`, `error`,
        `execution_time`, `labels`, `raise_for_error()`); `TaskiqResult(is_err=..., ...)`
        builds one (`TaskiqResult[int](...)` too)."""


class AsyncTaskiqTask(TaskHandle[R]):
    """The handle a compat broker's `kiq` returns: conveyor's `TaskHandle` with Taskiq's
    `wait_result(check_interval, timeout, with_logs)` and progress as `TaskProgress`."""

    __slots__ = ()

    async def wait_result(  # type: ignore[override]  # Taskiq's parameters, in Taskiq's order
        self,
        check_interval: float | None = None,
        timeout: float | None = -1.0,
        with_logs: bool = False,
    ) -> TaskResult[R]:
        """Wait for the result; a negative `timeout` waits as long as it takes.

        `check_interval` is accepted: conveyor is woken when the result is stored.

        Raises:
            TaskiqResultTimeoutError: (conveyor's `ResultTimeout`) not done within `timeout`.
        """
        return await super().wait_result(timeout)

    async def get_result(self, with_logs: bool = False) -> TaskResult[R] | None:
        """The result if the task has finished, else None."""
        return await super().get_result()

    async def get_progress(self) -> Any:
        """The last progress report: a `TaskProgress` when a `ProgressTracker` set it."""
        return TaskProgress.from_value(await super().get_progress())


async def gather(
    *tasks: TaskHandle[Any], timeout: float = -1, with_logs: bool = False, periodicity: float = 0.1
) -> tuple[TaskResult[Any], ...]:
    """Wait for the results of several tasks, in order (Taskiq's `gather`).

    Raises:
        TaskiqResultTimeoutError: not all finished within `timeout` seconds.
    """
    limit = None if timeout < 0 else timeout
    return tuple(await asyncio.gather(*(task.wait_result(timeout=limit) for task in tasks)))
