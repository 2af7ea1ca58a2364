"""Schedule values: when a schedule fires next, computed from a time alone (no I/O, no clock).

Three kinds, as in the `schedule=[...]` label and the `schedule_by_*` methods: `Cron` (a cron
expression in a time zone), `Interval` (every N seconds) and `Once` (one moment). All times are
unix timestamps; `next_after(t)` is the first fire time strictly after `t`, or None.

Daylight-saving time, for `Cron` with a `tz`: a wall-clock time skipped when the clocks go
forward fires when they jump (02:30 on that night fires at 03:00); a wall-clock time that
occurs twice when they go back fires once, at its first occurrence, unless the expression
runs every hour (`*` hours), which then runs in the repeated hour too, as cron does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from conveyor.errors import ConfigurationError, SerializationError
from conveyor.options import TaskOptions

__all__ = [
    "Cron",
    "Interval",
    "Once",
    "Schedule",
    "ScheduleEntry",
    "parse_label_schedules",
    "parse_schedule",
    "schedule_from_json",
    "zone_name",
]

_KINDS = ("cron", "interval", "time")
#: `cron_offset` and `schedule_id` are Taskiq's spellings: a time zone (or a fixed offset) for
#: `cron`, and the schedule's own id.
_EXTRA_KEYS = frozenset({"tz", "cron_offset", "schedule_id", "args", "kwargs", "labels"})
_OFFSET = re.compile(r"^UTC([+-])(\d{2}):(\d{2})$")


def _zone(name: str | None) -> tzinfo:
    """The time zone named `name` (UTC for None), or a fixed offset written `UTC+03:00`."""
    if name is None:
        return UTC
    if not isinstance(name, str):
        raise ConfigurationError(f"tz must be a time zone name, not {name!r}")
    fixed = _OFFSET.match(name)
    if fixed:
        sign = -1 if fixed.group(1) == "-" else 1
        offset = timedelta(hours=int(fixed.group(2)), minutes=int(fixed.group(3)))
        return timezone(sign * offset)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone {name!r}") from None


def zone_name(offset: str | timedelta | None) -> str | None:
    """A `tz` for a Taskiq `cron_offset`: a zone name as it is, a timedelta as `UTC+HH:MM`."""
    if not isinstance(offset, timedelta):
        return offset
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression ("*/5 * * * *", "@daily") in a time zone (UTC when `tz` is None).

    Raises:
        ConfigurationError: the expression or the time zone is not valid, or the expression
            never fires from now on ("0 0 30 2 *", a year in the past).
    """

    expression: str
    tz: str | None = None
    _zone: tzinfo = field(init=False, repr=False, compare=False)
    _every_hour: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ConfigurationError(f"cron must be a string, not {self.expression!r}")
        try:
            from croniter import croniter  # imported by the first cron schedule, not at startup

            fields = croniter(self.expression).expanded
        except (ValueError, KeyError) as exc:  # CroniterError is a ValueError
            raise ConfigurationError(f"bad cron expression {self.expression!r}: {exc}") from None
        object.__setattr__(self, "_zone", _zone(self.tz))
        object.__setattr__(self, "_every_hour", fields[1] == ["*"])
        if self.next_after(time.time()) is None:
            raise ConfigurationError(f"cron expression {self.expression!r} never fires")

    def next_after(self, t: float) -> float | None:
        """The first fire time strictly after `t`; None when there is none."""
        from croniter import CroniterBadDateError, croniter

        it = croniter(self.expression, datetime.fromtimestamp(t, self._zone))
        try:
            for _ in range(4):
                fire: datetime = it.get_next(datetime)
                if self._every_hour or not _repeated_wall_time(fire):
                    return fire.timestamp()
        except CroniterBadDateError:  # no such date any more: a past year, February 30th
            return None
        return fire.timestamp()  # pragma: no cover  # a fold lasts one hour: never reached

    def describe(self) -> str:
        """For listings: cron '<expression>' (<tz>)."""
        return f"cron {self.expression!r}" + (f" ({self.tz})" if self.tz else "")

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the broker."""
        return {"cron": self.expression, "tz": self.tz}


def _repeated_wall_time(moment: datetime) -> bool:
    """True for the second occurrence of a wall-clock time when the clocks went back."""
    first = moment.replace(fold=0)
    return first.utcoffset() != moment.utcoffset()


#: The shortest interval schedule, in seconds: a multiple of it is always later than a unix
#: time of this century by more than a float's rounding.
MIN_INTERVAL = 0.001


@dataclass(frozen=True, slots=True)
class Interval:
    """Every `seconds`, at the multiples of `seconds` after `anchor` (a unix time).

    With the default anchor 0, every scheduler process agrees on the fire times (an every-30 s
    schedule fires at :00 and :30 of each minute).

    Raises:
        ConfigurationError: `seconds` is not a number of at least `MIN_INTERVAL`.
    """

    seconds: float
    anchor: float = 0.0

    def __post_init__(self) -> None:
        seconds = self.seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not seconds >= MIN_INTERVAL  # NaN too
        ):
            shortest = f"at least {MIN_INTERVAL:g}"
            raise ConfigurationError(
                f"interval must be a positive number of seconds, {shortest}: {seconds!r}"
            )

    def next_after(self, t: float) -> float | None:
        """The first multiple of `seconds` after `anchor` strictly later than `t`."""
        steps = max((t - self.anchor) // self.seconds + 1, 0)
        at = self.anchor + steps * self.seconds
        # In floats, `anchor + steps * seconds` may round to `t` itself (every 0.2 s, a third of
        # today's times): the next multiple is then the answer, or the scheduler fires `t` for ever.
        return at if at > t else self.anchor + (steps + 1) * self.seconds

    def describe(self) -> str:
        """For listings: every <seconds> s."""
        return f"every {self.seconds:g} s"

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the broker."""
        return {"interval": self.seconds, "anchor": self.anchor}


@dataclass(frozen=True, slots=True)
class Once:
    """One run at `at` (a unix time); see `Once.at_datetime` for a datetime."""

    at: float

    @classmethod
    def at_datetime(cls, when: datetime) -> Once:
        """A run at `when`; a naive datetime is local time."""
        if not isinstance(when, datetime):
            raise ConfigurationError(f"time must be a datetime, not {when!r}")
        return cls(when.timestamp())

    def next_after(self, t: float) -> float | None:
        """`at` while it is later than `t`, then None."""
        return self.at if self.at > t else None

    def describe(self) -> str:
        """For listings: once at <UTC time>."""
        return f"once at {datetime.fromtimestamp(self.at, UTC).isoformat()}"

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the broker."""
        return {"time": self.at}


Schedule = Cron | Interval | Once


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """A schedule of one task with the call it sends.

    Attributes:
        id: stable id: `label:<task>:<hash>` for a label schedule, a hex id for a stored one.
        task_name: the task to send.
        schedule: when.
        args / kwargs / labels: the call (labels are per-call labels of the sent message).
        stored: True when kept in the broker (`Scheduler.add`), False for a label schedule.
    """

    id: str
    task_name: str
    schedule: Schedule
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    stored: bool = False

    def to_json(self) -> bytes:
        """The entry as stored in the broker (JSON).

        Raises:
            SerializationError: (a TypeError) an argument cannot be encoded.
        """
        data = {
            "id": self.id,
            "task": self.task_name,
            "schedule": self.schedule.to_json(),
            "args": self.args,
            "kwargs": self.kwargs,
            "labels": self.labels,
        }
        try:
            return msgspec.json.encode(data)
        except (msgspec.EncodeError, TypeError) as exc:
            raise SerializationError(f"schedule of {self.task_name}: {exc}") from None

    @classmethod
    def from_json(cls, raw: bytes) -> ScheduleEntry:
        """Read an entry written by `to_json`.

        Raises:
            ConfigurationError: (a ValueError) the bytes are not such an entry.
        """
        try:
            data = json.loads(raw)
            return cls(
                id=str(data["id"]),
                task_name=str(data["task"]),
                schedule=schedule_from_json(data["schedule"]),
                args=list(data.get("args") or []),
                kwargs=dict(data.get("kwargs") or {}),
                labels=dict(data.get("labels") or {}),
                stored=True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"unreadable stored schedule: {exc}") from None


def schedule_from_json(data: Mapping[str, Any]) -> Schedule:
    """The schedule of a stored entry (the inverse of `to_json`)."""
    if "cron" in data:
        return Cron(data["cron"], data.get("tz"))
    if "interval" in data:
        return Interval(float(data["interval"]), float(data.get("anchor", 0.0)))
    return Once(float(data["time"]))


def parse_schedule(spec: Mapping[str, Any]) -> Schedule:
    """The schedule of one item of a `schedule=[...]` label.

    An item has exactly one of `cron` (with an optional `tz`, or Taskiq's `cron_offset`: a zone
    name or a timedelta), `interval` (seconds, or a timedelta) or `time` (a datetime, or an
    ISO 8601 string), plus optional `args`, `kwargs`, `labels` and `schedule_id`.

    Raises:
        ConfigurationError: saying what is wrong with the item.
    """
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"a schedule must be a dict like {{'interval': 60}}: {spec!r}")
    kinds = [kind for kind in _KINDS if kind in spec]
    if len(kinds) != 1:
        raise ConfigurationError(f"a schedule needs one of 'cron', 'interval' or 'time': {spec!r}")
    unknown = set(spec) - _EXTRA_KEYS - set(_KINDS)
    if unknown:
        raise ConfigurationError(f"unknown schedule key(s) {sorted(unknown)} in {spec!r}")
    zone = [key for key in ("tz", "cron_offset") if spec.get(key) is not None]
    if (zone and kinds != ["cron"]) or len(zone) > 1:
        raise ConfigurationError(f"'tz' goes with 'cron' only, once (or 'cron_offset'): {spec!r}")
    _check_call(spec)
    if kinds == ["cron"]:
        return Cron(spec["cron"], zone_name(spec[zone[0]]) if zone else None)
    if kinds == ["interval"]:
        every = spec["interval"]
        return Interval(every.total_seconds() if isinstance(every, timedelta) else every)
    when = spec["time"]
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise ConfigurationError(f"time must be a datetime, not {when!r}") from None
    return Once.at_datetime(when)


def _check_call(spec: Mapping[str, Any]) -> None:
    if not isinstance(spec.get("args", []), list | tuple):
        raise ConfigurationError(f"schedule args must be a list: {spec!r}")
    for key in ("kwargs", "labels"):
        if not isinstance(spec.get(key, {}), Mapping):
            raise ConfigurationError(f"schedule {key} must be a dict: {spec!r}")


def _check_declared_call(
    task_name: str, spec: Mapping[str, Any], signature: inspect.Signature
) -> None:
    TaskOptions.parse(spec.get("labels", {}), task_name)
    try:
        signature.bind(*spec.get("args", []), **spec.get("kwargs", {}))
    except TypeError as exc:
        raise ConfigurationError(
            f"task {task_name!r}: schedule arguments do not fit: {exc}"
        ) from None


def parse_label_schedules(
    task_name: str, specs: Any, signature: inspect.Signature | None = None
) -> list[ScheduleEntry]:
    """The entries of a task's `schedule` label, each with an id stable across processes.

    Args:
        task_name: the task's name, part of each id.
        specs: the label's value.
        signature: the task's call signature, which each schedule's args must fit.

    Raises:
        ConfigurationError: the label is not a list of valid schedules, or arguments do not fit.
    """
    if specs is None:
        return []
    if isinstance(specs, Mapping) or not isinstance(specs, list | tuple):
        raise ConfigurationError(f"schedule must be a list of schedules, not {specs!r}")
    entries = []
    for spec in specs:
        schedule = parse_schedule(spec)
        if signature is not None:  # declaring the task (else only validating its labels)
            _check_declared_call(task_name, spec, signature)
        digest = (
            spec.get("schedule_id")
            or hashlib.sha1(
                json.dumps(spec, sort_keys=True, default=str).encode(), usedforsecurity=False
            ).hexdigest()[:12]
        )
        entries.append(
            ScheduleEntry(
                id=f"label:{task_name}:{digest}",
                task_name=task_name,
                schedule=schedule,
                args=list(spec.get("args", [])),
                kwargs=dict(spec.get("kwargs", {})),
                labels=dict(spec.get("labels", {})),
            )
        )
    return entries
