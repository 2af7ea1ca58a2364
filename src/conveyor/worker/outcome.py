"""The outcome of one run and the result it becomes; one INFO/ERROR log line per ending."""

from __future__ import annotations

import logging
import os
import socket
import traceback
from dataclasses import dataclass
from typing import Any

from conveyor.message import TaskMessage
from conveyor.result import TaskResult, TaskStatus, utcnow

__all__ = ["Outcome", "build_result", "describe", "failed_result", "log_end", "worker_name"]

log = logging.getLogger("conveyor.worker")
_HOST = socket.gethostname()


def worker_name() -> str:
    """ "host:pid" of this process, computed each time: forked workers get their own pid."""
    return f"{_HOST}:{os.getpid()}"


@dataclass(slots=True)
class Outcome:
    """What the call produced: a value or an exception, and when it ran."""

    value: Any = None
    error: BaseException | None = None
    started_at: Any = None
    elapsed: float = 0.0


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def build_result(
    message: TaskMessage,
    status: TaskStatus,
    outcome: Outcome,
    *,
    value: Any = None,
    error: BaseException | None = None,
) -> TaskResult[Any]:
    return TaskResult(
        task_id=message.task_id,
        task_name=message.task_name,
        status=status,
        return_value=value,
        error_type=None if error is None else type(error).__qualname__,
        error_module=None if error is None else type(error).__module__,
        error_message=None if error is None else str(error),
        error_traceback=None if error is None else _format_traceback(error),
        execution_time=outcome.elapsed,
        labels=message.labels,
        attempts=message.attempt,
        started_at=outcome.started_at,
        finished_at=utcnow(),
        worker=worker_name(),
    )


def failed_result(message: TaskMessage, error: BaseException, outcome: Outcome) -> TaskResult[Any]:
    return build_result(message, TaskStatus.FAILED, outcome, error=error)


def _format_traceback(error: BaseException) -> str | None:
    if error.__traceback__ is None:
        return None
    return "".join(traceback.format_exception(error))


def log_end(message: TaskMessage, result: TaskResult[Any]) -> None:
    succeeded = result.status is TaskStatus.SUCCEEDED
    if succeeded and not log.isEnabledFor(logging.INFO):
        return
    extra = {
        "task_id": message.task_id,
        "task_name": message.task_name,
        "status": str(result.status),
        "elapsed": result.execution_time,
        "attempt": message.attempt,
    }
    if succeeded:
        log.info(
            "succeeded %s[%s] in %.4f s",
            message.task_name,
            message.task_id,
            result.execution_time,
            extra=extra,
        )
    else:
        log.error(
            "%s %s[%s] after %d attempt(s): %s: %s",
            result.status,
            message.task_name,
            message.task_id,
            message.attempt,
            result.error_type,
            result.error_message,
            extra=extra,
        )
