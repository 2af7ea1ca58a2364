"""Every exception conveyor raises, in one tree rooted at :class:`ConveyorError`.

`Retry` and `Reject` are control signals a task raises on purpose; they are not failures and do
not derive from `ConveyorError`.
"""

from __future__ import annotations

__all__ = [
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "ConveyorError",
    "Reject",
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
