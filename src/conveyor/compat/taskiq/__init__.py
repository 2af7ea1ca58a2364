"""Taskiq's public names on conveyor: `from taskiq import X` becomes
`from conveyor.compat.taskiq import X`, and Taskiq's module paths are here too
(`conveyor.compat.taskiq.schedule_sources`, `.middlewares`, `.depends.progress_tracker`, ...).

Where conveyor has the thing, the name is the same object: `TaskiqDepends` is `conveyor.Depends`,
`TaskiqMiddleware` and `TaskiqMessage` are conveyor's, a task is a `conveyor.Task` (with
`task_name`), `TaskiqResult` is `conveyor.TaskResult`. The brokers are conveyor's with Taskiq's
events and state; see docs/migrating-from-taskiq.md for what differs on purpose.
"""

from typing import TYPE_CHECKING

from conveyor.compat.taskiq._broker import (
    AsyncBroker,
    Context,
    InMemoryBroker,
    TaskiqEvents,
    TaskiqState,
    ZeroMQBroker,
)
from conveyor.compat.taskiq._result import AsyncTaskiqTask, TaskiqResult, gather
from conveyor.compat.taskiq._retry import SimpleRetryMiddleware, SmartRetryMiddleware
from conveyor.compat.taskiq._schedules import ScheduledTask, ScheduleSource, TaskiqScheduler
from conveyor.compat.taskiq.exceptions import (
    NoResultError,
    ResultGetError,
    ResultIsReadyError,
    SecurityError,
    SendTaskError,
    TaskiqError,
    TaskiqResultTimeoutError,
    TaskRejectedError,
)
from conveyor.context import Depends as TaskiqDepends
from conveyor.engines.base import ResultBackend as AsyncResultBackend
from conveyor.message import TaskiqMessage
from conveyor.middleware import TaskiqMiddleware
from conveyor.task import Task as AsyncTaskiqDecoratedTask

if TYPE_CHECKING:  # imported on first use: prometheus-client is the `web` extra
    from conveyor.prometheus import PrometheusMiddleware


def __getattr__(name: str) -> object:
    """`PrometheusMiddleware`, imported only when used."""
    if name == "PrometheusMiddleware":
        from conveyor.prometheus import PrometheusMiddleware

        return PrometheusMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncBroker",
    "AsyncResultBackend",
    "AsyncTaskiqDecoratedTask",
    "AsyncTaskiqTask",
    "Context",
    "InMemoryBroker",
    "NoResultError",
    "PrometheusMiddleware",
    "ResultGetError",
    "ResultIsReadyError",
    "ScheduleSource",
    "ScheduledTask",
    "SecurityError",
    "SendTaskError",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "TaskRejectedError",
    "TaskiqDepends",
    "TaskiqError",
    "TaskiqEvents",
    "TaskiqMessage",
    "TaskiqMiddleware",
    "TaskiqResult",
    "TaskiqResultTimeoutError",
    "TaskiqScheduler",
    "TaskiqState",
    "ZeroMQBroker",
    "gather",
]
