"""Every exception conveyor raises, in one tree rooted at :class:`ConveyorError`.

`Retry`, `Reject`, `Requeue` and `NoResult` are control signals a task raises on purpose; they
are not failures and do not derive from `ConveyorError`.

`remote_error` turns a failure recorded in a result back into an exception for the caller: an
instance of the task's own exception class where that class can be found without running any
code (its module is already imported), else a plain `TaskError`.
"""

from __future__ import annotations

import sys

__all__ = [
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "ConveyorError",
    "NoResult",
    "Reject",
    "Requeue",
    "ResultError",
    "ResultNotFound",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "SignatureError",
    "SoftTimeLimitExceeded",
    "TaskCancelled",
    "TaskError",
    "TaskNotFound",
    "WorkflowError",
    "remote_error",
]


class ConveyorError(Exception):
    """Root of every error conveyor raises."""


class ConfigurationError(ConveyorError, ValueError):
    """Raised when an option, label, URL or schedule given by the user is invalid."""


class SerializationError(ConveyorError, TypeError):
    """Raised when arguments or results cannot be encoded, or bytes cannot be decoded."""


class SignatureError(SerializationError):
    """Raised when a message's HMAC signature is missing or does not match the secret key."""


class BrokerError(ConveyorError):
    """Raised when the broker refuses or fails an operation."""


class BrokerConnectionError(BrokerError, ConnectionError):
    """Raised when the broker cannot be reached; the message names the URL, password hidden."""


class WorkflowError(ConveyorError):
    """Raised when a workflow cannot go on, e.g. a group member's value left the result store.

    It becomes the workflow's failure (`TaskResult.error_type` "WorkflowError").
    """


class TaskNotFound(ConveyorError, LookupError):
    """Raised when a task name is not registered on the broker."""


class ResultError(ConveyorError):
    """Base for errors about reading a task's result."""


class ResultTimeout(ResultError, TimeoutError):
    """Raised by `wait_result` when the task did not finish within the timeout."""


class ResultNotFound(ResultError, LookupError):
    """Raised when a result is asked for an id the result backend does not know."""


class TaskError(ConveyorError):
    """A task's failure as seen by the caller: `TaskResult.error`, raised by `raise_for_error()`.

    Attributes:
        exc_type: qualified name of the exception raised inside the task.
        message: its message.
        traceback: the formatted traceback from the worker, if any.
    """

    def __init__(self, exc_type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{exc_type}: {message}" if message else exc_type)
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


class TaskCancelled(ConveyorError):
    """Recorded as the error of a task that was cancelled before or while it ran."""


class SoftTimeLimitExceeded(ConveyorError):
    """Raised inside a task when its `soft_timeout` passes, so it can clean up before `timeout`."""


class Retry(Exception):
    """Raise inside a task to have it run again after `delay` seconds.

    Args:
        delay: seconds before the next attempt; the task's backoff policy when None.
        max_retries: overrides the task's `retries` label for this decision.
        exc: the error that caused the retry, recorded if the retries run out.
    """

    def __init__(
        self,
        delay: float | None = None,
        *,
        max_retries: int | None = None,
        exc: BaseException | None = None,
    ) -> None:
        super().__init__(f"retry in {delay}s" if delay is not None else "retry")
        self.delay = delay
        self.max_retries = max_retries
        self.exc = exc


class Reject(Exception):
    """Raise inside a task to fail it at once and move its message to the dead-letter queue."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


class Requeue(Exception):
    """Raise inside a task to put its message back on its queue at once, as if it had not run:
    no result is stored and the attempt is not counted (Taskiq's `context.requeue()`)."""

    def __init__(self) -> None:
        super().__init__("requeued")


class NoResult(Exception):
    """Raise inside a task to end it without storing a result (Taskiq's `NoResultError`): the
    message is acknowledged and its handle keeps waiting, e.g. for a copy the task sent."""


def remote_error(
    exc_type: str, message: str, traceback: str | None = None, module: str | None = None
) -> TaskError:
    """The exception a caller sees for a task that failed with `module.exc_type(message)`.

    The class is looked up in `sys.modules` only: nothing named by a stored result is ever
    imported. A class found there that derives from `Exception` gives an instance of a subclass
    of both it and `TaskError` (so `except ZeroDivisionError` and `except TaskError` both catch
    it, and `str()` is the task's message); anything else gives a plain `TaskError`.
    """
    cls = _exception_class(module, exc_type)
    if cls is None:
        return TaskError(exc_type, message, traceback)
    try:
        remote = _remote_class(cls)
        error: TaskError = remote.__new__(remote, message)
    except Exception:  # a class that refuses to be derived from or built without its __init__
        return TaskError(exc_type, message, traceback)
    error.args = (message,) if message else ()
    error.exc_type, error.message, error.traceback = exc_type, message, traceback
    return error


def _exception_class(module: str | None, qualname: str) -> type[Exception] | None:
    target: object = sys.modules.get(module or "builtins")
    for part in qualname.split("."):
        if target is None or part.startswith("<"):  # `<locals>`: not reachable by name
            return None
        target = getattr(target, part, None)
    if not isinstance(target, type) or not issubclass(target, Exception):
        return None
    if issubclass(target, TaskError):  # already the caller's view of a failure
        return None
    return target


_REMOTE: dict[type[Exception], type[TaskError]] = {}


def _remote_class(cls: type[Exception]) -> type[TaskError]:
    """A subclass of `cls` and `TaskError` that reads as `cls` (name, module), made once."""
    remote = _REMOTE.get(cls)
    if remote is None:
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__str__": Exception.__str__,
            "__repr__": Exception.__repr__,
        }
        remote = type(cls.__name__, (cls, TaskError), namespace)
        _REMOTE[cls] = remote
    return remote
