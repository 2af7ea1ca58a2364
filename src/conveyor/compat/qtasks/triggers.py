"""APScheduler's triggers as QTasks' timers take them, made conveyor schedules: `CronTrigger`
(cron fields by name), `IntervalTrigger` (weeks ... seconds) and `DateTrigger` (one moment).

As in APScheduler, the fields of a `CronTrigger` below the largest one given default to their
least value (`CronTrigger(hour=9)` fires at 9:00:00, not every minute of 9 o'clock), those above
to every value; `day_of_week` counts from Monday (0) or takes names (`mon-fri`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from conveyor.errors import ConfigurationError
from conveyor.schedules import Cron, Interval, Once, Schedule

__all__ = ["CronTrigger", "DateTrigger", "IntervalTrigger", "Trigger"]

#: Cron fields, largest first; `second` is croniter's optional sixth field.
_FIELDS = ("month", "day", "day_of_week", "hour", "minute", "second")
_LEAST = {"month": "1", "day": "1", "hour": "0", "minute": "0", "second": "0"}


class CronTrigger:
    """Fires at the times the cron fields give, in `timezone` (UTC by default).

    Raises:
        ConfigurationError: a field conveyor cannot express (`year`, `week`, dates, jitter).
    """

    def __init__(
        self,
        year: object = None,
        month: object = None,
        day: object = None,
        week: object = None,
        day_of_week: object = None,
        hour: object = None,
        minute: object = None,
        second: object = None,
        start_date: object = None,
        end_date: object = None,
        timezone: object = None,
        jitter: object = None,
    ) -> None:
        unsupported = {"year": year, "week": week, "start_date": start_date}
        unsupported |= {"end_date": end_date, "jitter": jitter}
        given = [name for name, value in unsupported.items() if value is not None]
        if given:
            raise ConfigurationError(f"CronTrigger: {', '.join(given)} have no conveyor form")
        values = {
            "day_of_week": day_of_week,
            "month": month,
            "day": day,
            "hour": hour,
            "minute": minute,
            "second": second,
        }
        self.fields = _cron_fields({k: None if v is None else str(v) for k, v in values.items()})
        self.timezone = None if timezone is None else str(timezone)

    def schedule(self) -> Schedule:
        """The conveyor schedule."""
        f = self.fields
        expression = f"{f['minute']} {f['hour']} {f['day']} {f['month']} {f['day_of_week']}"
        if f["second"] != "0":
            expression += f" {f['second']}"  # croniter's seconds field
        return Cron(expression, self.timezone)


def _cron_fields(values: dict[str, str | None]) -> dict[str, str]:
    largest = next((i for i, name in enumerate(_FIELDS) if values[name] is not None), None)
    fields = {}
    for i, name in enumerate(_FIELDS):
        value = values[name]
        if value is None:
            below = largest is not None and i > largest and name != "day_of_week"
            value = _LEAST[name] if below else "*"
        fields[name] = value
    fields["day_of_week"] = _weekdays(fields["day_of_week"])
    return fields


def _weekdays(value: str) -> str:
    """APScheduler's weekday numbers (0 = Monday) as cron's (0 = Sunday); names are kept."""
    return re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 7), value)


class IntervalTrigger:
    """Fires every so long (the sum of the units given)."""

    def __init__(
        self,
        weeks: float = 0,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        start_date: object = None,
        end_date: object = None,
        timezone: object = None,
        jitter: object = None,
    ) -> None:
        every = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        self.seconds = every.total_seconds()

    def schedule(self) -> Schedule:
        """The conveyor schedule."""
        return Interval(self.seconds)


class DateTrigger:
    """Fires once, at `run_date` (a datetime, or an ISO 8601 string)."""

    def __init__(self, run_date: datetime | str, timezone: object = None) -> None:
        self.run_date = datetime.fromisoformat(run_date) if isinstance(run_date, str) else run_date

    def schedule(self) -> Schedule:
        """The conveyor schedule."""
        return Once.at_datetime(self.run_date)


Trigger = CronTrigger | IntervalTrigger | DateTrigger
