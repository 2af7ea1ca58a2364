"""The known labels: their validation, and the few computations they drive (ETA, rate, retry).

Labels travel in the message, so these helpers are shared by producers (validation, ETA) and
workers (rate limits, retry delays). Unknown labels are free metadata and pass through.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from conveyor.errors import ConfigurationError

__all__ = [
    "DEFAULT_QUEUE",
    "TaskDefaults",
    "eta_of",
    "parse_rate",
    "retry_delay_seconds",
    "validate_labels",
]

DEFAULT_QUEUE = "default"

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh]?)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_NUMBER_LABELS = (
    "delay",
    "timeout",
    "soft_timeout",
    "retry_delay",
    "retry_backoff",
    "retry_max_delay",
    "result_ttl",
    "unique_for",
)


def parse_rate(value: str) -> tuple[int, float]:
    """Parse "10/m" (also "5/s", "100/h", "3/10s") into (limit, period seconds).

    Raises:
        ConfigurationError: for anything else.
    """
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ConfigurationError(f"rate_limit {value!r} is not like '10/m', '5/s' or '100/h'")
    count = float(match.group(2)) if match.group(2) else 1.0
    return int(match.group(1)), count * _PERIOD[match.group(3)]


def validate_labels(labels: Mapping[str, Any], where: str) -> None:
    """Check the known labels' types and ranges.

    Raises:
        ConfigurationError: naming `where` (a task name) and the label.
    """
    try:
        _validate(labels)
    except (ConfigurationError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"task {where!r}: {exc}") from None


def _validate(labels: Mapping[str, Any]) -> None:
    queue = labels.get("queue", DEFAULT_QUEUE)
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"queue must be a non-empty string, not {queue!r}")
    priority = labels.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ConfigurationError(f"priority must be an integer 0-9, not {priority!r}")
    _validate_numbers(labels)
    _validate_options(labels)


def _validate_numbers(labels: Mapping[str, Any]) -> None:
    for key in _NUMBER_LABELS:
        value = labels.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigurationError(f"{key} must be a number of seconds, not {value!r}")
        if value is not None and value < 0:
            raise ConfigurationError(f"{key} must not be negative, not {value!r}")
    retries = labels.get("retries")
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ConfigurationError(f"retries must be a non-negative integer, not {retries!r}")


def _validate_options(labels: Mapping[str, Any]) -> None:
    eta = labels.get("eta")
    if isinstance(eta, str):  # how JSON carries a datetime to the worker
        eta = _parse_datetime(eta)
    if eta is not None and not isinstance(eta, datetime | int | float):
        raise ConfigurationError(f"eta must be a datetime, not {eta!r}")
    executor = labels.get("executor")
    if executor not in (None, "thread", "process", "async"):
        raise ConfigurationError(f"executor must be 'thread' or 'process', not {executor!r}")
    if labels.get("rate_limit") is not None:
        parse_rate(labels["rate_limit"])
    if labels.get("schedule") is not None:
        from conveyor.scheduler.schedules import parse_label_schedules  # croniter: only if used

        parse_label_schedules("", labels["schedule"])


def _parse_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"eta must be a datetime, not {text!r}") from None


def eta_of(labels: Mapping[str, Any], now: float | None = None) -> float | None:
    """Return the unix time before which a message must not run, or None for "now"."""
    eta = labels.get("eta")
    if eta is not None:
        return eta.timestamp() if isinstance(eta, datetime) else float(eta)
    delay = labels.get("delay")
    if delay:
        return (time.time() if now is None else now) + float(delay)
    return None


def retry_delay_seconds(labels: Mapping[str, Any], attempt: int) -> float:
    """Seconds to wait before attempt `attempt + 1`, from the retry labels.

    `retry_delay * retry_backoff ** (attempt - 1)`, capped by `retry_max_delay`; with
    `retry_jitter` the delay is drawn uniformly from [0, delay] ("full jitter").
    """
    delay = float(labels.get("retry_delay") or 0.0)
    backoff = float(labels.get("retry_backoff") or 1.0)
    delay *= backoff ** max(attempt - 1, 0)
    cap = labels.get("retry_max_delay")
    if cap is not None:
        delay = min(delay, float(cap))
    if labels.get("retry_jitter") and delay > 0:
        delay = random.uniform(0, delay)
    return delay


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

    def labels(self) -> dict[str, Any]:
        """The defaults as labels (only those set)."""
        found = {"retries": self.retries, "retry_delay": self.retry_delay, "timeout": self.timeout}
        return {k: v for k, v in found.items() if v is not None}


def _env_number(name: str, kind: Callable[[str], Any]) -> Any:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
