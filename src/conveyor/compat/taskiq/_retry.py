"""Taskiq's retry middlewares: only tasks that opt in are retried.

A task opts in with the label `retry_on_error=True` (or every task, with
`default_retry_label=True`); `max_retries` counts every run, the first included, as Taskiq
does. These middlewares decide nothing themselves: before each run they write the retry labels
conveyor's worker reads (`retries`, `retry_delay`, `retry_on`), so the retry is conveyor's own
(the same task id, a delayed redelivery, dead-lettered at the end).

`SmartRetryMiddleware` reads a task's `delay` label as its retry delay, as Taskiq does: for a task
that opts in, the label is renamed when the message is sent, so it does not postpone the first
run (conveyor's `delay` label would).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from conveyor.message import TaskMessage
from conveyor.middleware import Middleware

__all__ = ["SimpleRetryMiddleware", "SmartRetryMiddleware"]

#: Where `SmartRetryMiddleware` keeps a task's `delay` label once it is read as a retry delay.
_BASE_DELAY = "smart_retry_delay"


class SimpleRetryMiddleware(Middleware):
    """Retry opted-in tasks at once, up to `max_retries` runs in all.

    Args:
        default_retry_count: runs in all for tasks without a `max_retries` label.
        default_retry_label: retry tasks without a `retry_on_error` label too.
        no_result_on_retry: accepted; conveyor stores a result only for the last run.
        types_of_exceptions: retry only these exception types (and their subclasses).
    """

    def __init__(
        self,
        default_retry_count: int = 3,
        default_retry_label: bool = False,
        no_result_on_retry: bool = True,
        types_of_exceptions: Iterable[type[BaseException]] | None = None,
    ) -> None:
        self.default_retry_count = default_retry_count
        self.default_retry_label = default_retry_label
        self.no_result_on_retry = no_result_on_retry
        self.types_of_exceptions = tuple(types_of_exceptions or ())

    def opted_in(self, message: TaskMessage) -> bool:
        """True when the message's task asks to be retried."""
        flag = message.labels.get("retry_on_error")
        if isinstance(flag, str):
            return flag.lower() == "true"
        return self.default_retry_label if flag is None else bool(flag)

    def retry_delay(self, message: TaskMessage) -> float:
        """Seconds before the next run of this message, if it fails."""
        return 0.0

    def pre_execute(self, message: TaskMessage) -> TaskMessage:
        """Write the retry labels of this run (none for a task that did not opt in)."""
        labels = message.labels
        if not self.opted_in(message):
            labels.setdefault("retries", 0)
            return message
        runs = int(labels.get("max_retries", self.default_retry_count))
        labels["retries"] = max(runs - 1, 0)
        labels["retry_delay"] = self.retry_delay(message)
        for key in ("retry_backoff", "retry_max_delay", "retry_jitter"):
            labels.pop(key, None)  # the delay above is this run's, already worked out
        if self.types_of_exceptions:
            labels["retry_on"] = [_name(kind) for kind in self.types_of_exceptions]
        return message


class SmartRetryMiddleware(SimpleRetryMiddleware):
    """Retry opted-in tasks after a delay: the task's `delay` label or `default_delay`, times
    the retry's number with `use_delay_exponent` (at most `max_delay_exponent`), plus up to a
    second of jitter with `use_jitter`.

    Args:
        default_retry_count / default_retry_label / no_result_on_retry / types_of_exceptions:
            as `SimpleRetryMiddleware`.
        default_delay: seconds before a retry.
        use_jitter: add a random part of a second.
        use_delay_exponent: multiply the delay by the retry's number.
        max_delay_exponent: the longest delay with `use_delay_exponent`.
        schedule_source: accepted; retries are conveyor's delayed redeliveries, not schedules.
    """

    def __init__(
        self,
        default_retry_count: int = 3,
        default_retry_label: bool = False,
        no_result_on_retry: bool = True,
        default_delay: float = 5,
        use_jitter: bool = False,
        use_delay_exponent: bool = False,
        max_delay_exponent: float = 60,
        schedule_source: Any = None,
        types_of_exceptions: Iterable[type[BaseException]] | None = None,
    ) -> None:
        super().__init__(
            default_retry_count, default_retry_label, no_result_on_retry, types_of_exceptions
        )
        self.default_delay = default_delay
        self.use_jitter = use_jitter
        self.use_delay_exponent = use_delay_exponent
        self.max_delay_exponent = max_delay_exponent

    def pre_send(self, message: TaskMessage) -> TaskMessage:
        """For a task that opts in, its `delay` label is its retry delay, not a wait before the
        first run."""
        if self.opted_in(message) and "delay" in message.labels:
            message.labels[_BASE_DELAY] = message.labels.pop("delay")
        return message

    def retry_delay(self, message: TaskMessage) -> float:
        """The delay before the run after this one, computed as Taskiq does."""
        labels = message.labels
        delay = float(labels.get(_BASE_DELAY, labels.get("delay", self.default_delay)))
        if self.use_delay_exponent:
            delay = min(delay * message.attempt, self.max_delay_exponent)
        if self.use_jitter:
            delay += random.random()  # spread retries; not security-sensitive
        return delay


def _name(kind: type[BaseException]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"
