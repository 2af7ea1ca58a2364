"""Retry middlewares: defaults for the `retries` family of labels, as Taskiq users know them.

The retry decision itself lives in one place (`conveyor.retry_policy`); these middlewares only
fill in labels a task did not set, so a decorator's `retries=` always wins.
"""

from __future__ import annotations

from conveyor.message import TaskMessage
from conveyor.middleware.base import Middleware

__all__ = ["SimpleRetryMiddleware", "SmartRetryMiddleware"]


class SimpleRetryMiddleware(Middleware):
    """Retry every failing task up to `default_retry_count` times, without delay.

    Args:
        default_retry_count: retries for tasks that set no `retries` label.
        default_retry_label: accepted for Taskiq compatibility; retries apply to every task.
        no_result_on_retry: accepted for Taskiq compatibility; results are stored only at the end.
    """

    def __init__(
        self,
        default_retry_count: int = 3,
        default_retry_label: bool = True,
        no_result_on_retry: bool = True,
    ) -> None:
        self.defaults: dict[str, object] = {"retries": default_retry_count}

    def pre_execute(self, message: TaskMessage) -> TaskMessage:
        """Fill in retry labels the task did not set."""
        for key, value in self.defaults.items():
            message.labels.setdefault(key, value)
        return message


class SmartRetryMiddleware(SimpleRetryMiddleware):
    """Retry with exponential backoff and jitter.

    Args:
        default_retry_count: retries for tasks that set no `retries` label.
        default_delay: seconds before the first retry.
        use_jitter: spread retries randomly over [0, delay] so failures do not stampede.
        use_delay_exponent: double the delay after each attempt.
        max_delay_exponent: cap on the delay, seconds.
    """

    def __init__(
        self,
        default_retry_count: int = 3,
        default_delay: float = 5.0,
        use_jitter: bool = True,
        use_delay_exponent: bool = True,
        max_delay_exponent: float = 60.0,
    ) -> None:
        super().__init__(default_retry_count)
        self.defaults.update(
            retry_delay=default_delay,
            retry_jitter=use_jitter,
            retry_backoff=2.0 if use_delay_exponent else 1.0,
            retry_max_delay=max_delay_exponent,
        )
