"""Labels parsed once into `TaskOptions`, a frozen value with units in its names.

A message carries its labels as a plain dict (the wire format of `docs/message-format.md`):
the known labels below are options, anything else is free metadata that stays in the dict.
Producers parse when a task is declared or a kicker is built, workers when a message arrives,
so a bad value is a `ConfigurationError` naming the task on both sides.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import msgspec

from conveyor.errors import ConfigurationError

__all__ = [
    "DEFAULT_OPTIONS",
    "DEFAULT_QUEUE",
    "Rate",
    "TaskDefaults",
    "TaskOptions",
    "parse_rate",
]

DEFAULT_QUEUE: Final = "default"

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh]?)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_SECONDS = (
    "delay",
    "timeout",
    "soft_timeout",
    "retry_delay",
    "retry_max_delay",
    "result_ttl",
    "unique_for",
)
_EXECUTORS = (None, "thread", "process", "async")


class Rate(msgspec.Struct, frozen=True):
    """A `rate_limit`: at most `limit` runs in any window of `period_seconds`."""

    limit: int
    period_seconds: float


def parse_rate(value: object) -> Rate:
    """Parse "10/m" (also "5/s", "100/h", "3/10s").

    Raises:
        ConfigurationError: for anything else.
    """
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ConfigurationError(f"rate_limit {value!r} is not like '10/m', '5/s' or '100/h'")
    count = float(match.group(2)) if match.group(2) else 1.0
    return Rate(int(match.group(1)), count * _PERIOD[match.group(3)])


class TaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The known labels of one message, checked. See the README's table of labels.

    Attributes:
        queue: the queue it is sent to.
        priority: 0-9, higher runs first.
        eta_unix: unix time before which it must not run (from `eta`), or None.
        delay_seconds: run no earlier than this long after sending (from `delay`), or None.
        timeout_seconds: hard limit of one run, or None.
        soft_timeout_seconds: when `SoftTimeLimitExceeded` is raised inside the run, or None.
        executor: "thread", "process", "async", or None for the function's kind.
        retries: automatic retries, or None for the broker's default.
        retry_delay_seconds / retry_backoff / retry_max_delay_seconds / retry_jitter: the
            delay before retry n is `retry_delay * retry_backoff ** (n - 1)`, capped, maybe
            drawn uniformly from [0, delay].
        rate_limit: at most so many runs per period over all workers, or None.
        result_ttl_seconds: how long the result is kept, or None for the store's default.
        store_result: False keeps no result.
        unique_for_seconds: a second send of the same task id in this window sends nothing.
    """

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    eta_unix: float | None = None
    delay_seconds: float | None = None
    timeout_seconds: float | None = None
    soft_timeout_seconds: float | None = None
    executor: str | None = None
    retries: int | None = None
    retry_delay_seconds: float | None = None
    retry_backoff: float | None = None
    retry_max_delay_seconds: float | None = None
    retry_jitter: bool = False
    rate_limit: Rate | None = None
    result_ttl_seconds: float | None = None
    store_result: bool = True
    unique_for_seconds: float | None = None

    @classmethod
    def parse(cls, labels: Mapping[str, Any], where: str) -> TaskOptions:
        """The options the known `labels` give.

        Raises:
            ConfigurationError: a known label has a bad value, naming `where` (a task name).
        """
        if not labels:
            return DEFAULT_OPTIONS
        try:
            return _parse(labels)
        except (ConfigurationError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"task {where!r}: {exc}") from None

    def due_at(self, now: float | None = None) -> float | None:
        """The unix time before which the message must not run, or None for "now"."""
        if self.eta_unix is not None:
            return self.eta_unix
        if self.delay_seconds:
            return (time.time() if now is None else now) + self.delay_seconds
        return None

    def retry_delay(self, attempt: int, default_delay: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (full jitter when `retry_jitter`)."""
        base = self.retry_delay_seconds
        delay = float((default_delay if base is None else base) or 0.0)
        delay *= (self.retry_backoff or 1.0) ** max(attempt - 1, 0)
        if self.retry_max_delay_seconds is not None:
            delay = min(delay, self.retry_max_delay_seconds)
        if self.retry_jitter and delay > 0:
            delay = random.uniform(0, delay)
        return delay


DEFAULT_OPTIONS: Final = TaskOptions()


def _parse(labels: Mapping[str, Any]) -> TaskOptions:
    queue = labels.get("queue", DEFAULT_QUEUE)
    if queue is None:
        queue = DEFAULT_QUEUE
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"queue must be a non-empty string, not {queue!r}")
    priority = labels.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ConfigurationError(f"priority must be an integer 0-9, not {priority!r}")
    seconds = {key: _number(labels, key) for key in _SECONDS}
    executor = labels.get("executor")
    if executor not in _EXECUTORS:
        raise ConfigurationError(f"executor must be 'thread' or 'process', not {executor!r}")
    rate = labels.get("rate_limit")
    if labels.get("schedule") is not None:
        _check_schedules(labels["schedule"])
    return TaskOptions(
        queue=queue,
        priority=priority,
        eta_unix=_eta(labels.get("eta")),
        delay_seconds=seconds["delay"],
        timeout_seconds=seconds["timeout"],
        soft_timeout_seconds=seconds["soft_timeout"],
        executor=executor,
        retries=_retries(labels.get("retries")),
        retry_delay_seconds=seconds["retry_delay"],
        retry_backoff=_number(labels, "retry_backoff"),
        retry_max_delay_seconds=seconds["retry_max_delay"],
        retry_jitter=bool(labels.get("retry_jitter")),
        rate_limit=None if rate is None else parse_rate(rate),
        result_ttl_seconds=seconds["result_ttl"],
        store_result=labels.get("store_result", True) is not False,
        unique_for_seconds=seconds["unique_for"] or None,
    )


def _number(labels: Mapping[str, Any], key: str) -> float | None:
    value = labels.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{key} must be a number of seconds, not {value!r}")
    if value < 0:
        raise ConfigurationError(f"{key} must not be negative, not {value!r}")
    return float(value)


def _retries(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"retries must be a non-negative integer, not {value!r}")
    return value


def _eta(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # how JSON carries a datetime to the worker
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"eta must be a datetime, not {value!r}") from None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ConfigurationError(f"eta must be a datetime, not {value!r}")


def _check_schedules(value: object) -> None:
    from conveyor.schedules import parse_label_schedules  # croniter is imported only if used

    parse_label_schedules("", value)


class TaskDefaults:
    """Defaults for tasks that set no label, from `CONVEYOR_MAX_RETRIES`, `..._RETRY_DELAY`,
    `..._TASK_TIMEOUT` when not given."""

    def __init__(
        self,
        retries: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.retries = retries if retries is not None else _env_number("CONVEYOR_MAX_RETRIES", int)
        self.retry_delay = (
            retry_delay if retry_delay is not None else _env_number("CONVEYOR_RETRY_DELAY", float)
        )
        self.timeout = (
            timeout if timeout is not None else _env_number("CONVEYOR_TASK_TIMEOUT", float)
        )


def _env_number(name: str, kind: Callable[[str], Any]) -> Any:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
