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
from typing import Annotated, Any, Final, Literal

import msgspec

from conveyor.errors import ConfigurationError

__all__ = [
    "DEFAULT_OPTIONS",
    "DEFAULT_QUEUE",
    "Rate",
    "TaskDefaults",
    "TaskOptions",
]

DEFAULT_QUEUE: Final = "default"

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh]?)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}

#: A number of seconds, not negative.
Seconds = Annotated[float, msgspec.Meta(ge=0)]


class Rate:
    """A `rate_limit`: at most `limit` runs in any window of `period_seconds`."""

    __slots__ = ("limit", "period_seconds")

    def __init__(self, limit: int, period_seconds: float) -> None:
        self.limit = limit
        self.period_seconds = period_seconds

    def __repr__(self) -> str:
        return f"Rate({self.limit}, {self.period_seconds})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        return (self.limit, self.period_seconds) == (other.limit, other.period_seconds)

    def __hash__(self) -> int:
        return hash((self.limit, self.period_seconds))


def _seconds(label: str) -> Any:
    """A field holding a number of seconds, named `label` in the labels."""
    return msgspec.field(default=None, name=label)


class TaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The known labels of one message, checked. See the README's table of labels; each field
    is read from the label of the name it has there (`timeout` -> `timeout_seconds`).

    Attributes:
        queue: the queue it is sent to.
        priority: 0-9, higher runs first.
        eta: a moment (an aware datetime, or unix seconds) before which it must not run.
        delay_seconds: run no earlier than this long after sending.
        timeout_seconds: hard limit of one run.
        soft_timeout_seconds: when `SoftTimeLimitExceeded` is raised inside the run.
        executor: "thread", "process", "async", or None for the function's kind.
        retries: automatic retries, or None for the broker's default.
        retry_delay_seconds / retry_backoff / retry_max_delay_seconds / retry_jitter: the
            delay before retry n is `retry_delay * retry_backoff ** (n - 1)`, capped, maybe
            drawn uniformly from [0, delay].
        rate_limit: at most so many runs per period over all workers.
        result_ttl_seconds: how long the result is kept, or None for the store's default.
        store_result: False keeps no result.
        unique_for_seconds: a second send of the same task id in this window sends nothing.
    """

    queue: Annotated[str, msgspec.Meta(min_length=1)] = DEFAULT_QUEUE
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0
    eta: datetime | float | None = None
    delay_seconds: Seconds | None = _seconds("delay")
    timeout_seconds: Seconds | None = _seconds("timeout")
    soft_timeout_seconds: Seconds | None = _seconds("soft_timeout")
    executor: Literal["thread", "process", "async"] | None = None
    retries: Annotated[int, msgspec.Meta(ge=0)] | None = None
    retry_delay_seconds: Seconds | None = _seconds("retry_delay")
    retry_backoff: Seconds | None = None
    retry_max_delay_seconds: Seconds | None = _seconds("retry_max_delay")
    retry_jitter: bool = False
    rate_limit: Rate | None = None
    result_ttl_seconds: Seconds | None = _seconds("result_ttl")
    store_result: bool = True
    unique_for_seconds: Seconds | None = _seconds("unique_for")

    @classmethod
    def parse(cls, labels: Mapping[str, Any], where: str) -> TaskOptions:
        """The options the known `labels` give (a label set to None counts as not set).

        Raises:
            ConfigurationError: a known label has a bad value, naming `where` (a task name).
        """
        if not labels:
            return DEFAULT_OPTIONS
        if None in labels.values():
            labels = {key: value for key, value in labels.items() if value is not None}
        try:
            options = msgspec.convert(labels, cls, dec_hook=_rate)
        except msgspec.ValidationError as exc:
            raise ConfigurationError(f"task {where!r}: {_label_error(exc)}") from None
        if "schedule" in labels:
            _check_schedules(labels["schedule"], where)
        return options

    def due_at(self, now: float | None = None) -> float | None:
        """The unix time before which the message must not run, or None for "now"."""
        if self.eta is not None:
            return self.eta.timestamp() if isinstance(self.eta, datetime) else self.eta
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


def _label_error(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int` <= 9 - at `$.priority`" as "priority: expected `int` <= 9"."""
    detail, at, path = str(exc).rpartition(" - at `$.")
    if not at:
        return str(exc)
    return f"{path.rstrip('`')}: {detail[:1].lower()}{detail[1:]}"


def _rate(kind: type, value: Any) -> Any:
    """msgspec's hook for `Rate`: "10/m", "5/s", "100/h" or "3/10s"."""
    if kind is not Rate:
        raise NotImplementedError(f"no conversion to {kind!r}")
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not like '10/m', '5/s' or '100/h'")
    count = float(match.group(2)) if match.group(2) else 1.0
    return Rate(int(match.group(1)), count * _PERIOD[match.group(3)])


def _check_schedules(value: object, where: str) -> None:
    from conveyor.schedules import parse_label_schedules  # croniter is imported only if used

    try:
        parse_label_schedules("", value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"task {where!r}: {exc}") from None


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
