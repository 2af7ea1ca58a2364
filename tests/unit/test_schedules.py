"""Schedule values: next fire times (with time zones and DST) and validation at declaration."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conveyor import ConfigurationError, InMemoryBroker, Scheduler
from conveyor.scheduler import Cron, Interval, Once, ScheduleEntry
from conveyor.scheduler.loop import run_id
from conveyor.schedules import parse_label_schedules, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: Any = UTC) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def fires(schedule: Any, start: float, count: int) -> list[datetime]:
    found, at = [], start
    for _ in range(count):
        at = schedule.next_after(at)
        found.append(datetime.fromtimestamp(at, UTC))
    return found


def test_interval_fires_on_multiples_of_its_period() -> None:
    every = Interval(30)
    assert every.next_after(100.0) == 120.0
    assert every.next_after(120.0) == 150.0  # strictly after
    assert every.next_after(119.999) == 120.0
    assert Interval(10, anchor=3.0).next_after(100.0) == 103.0
    assert Interval(10, anchor=300.0).next_after(100.0) == 300.0  # not before its anchor


@pytest.mark.parametrize("seconds", [0.001, 0.1, 0.2, 0.3, 1.7, 2.2, 30])
def test_an_interval_always_fires_strictly_later_despite_float_rounding(seconds: float) -> None:
    every = Interval(seconds, anchor=0.5)
    # 1796620035.0 every 0.2 s rounded to itself, and the scheduler fired it for ever.
    times = [1796620035.0, *(1796620000 + i / 10 for i in range(1000)), 2.0**31 + 0.1]
    for t in times:
        at = every.next_after(t)
        assert at is not None
        assert t < at <= t + seconds + 1e-6, (t, at)  # a float of 2**31 is exact to 1e-6


def test_an_interval_must_be_at_least_a_millisecond() -> None:
    for bad in (0.0001, -1, float("nan"), True, "5"):
        with pytest.raises(ConfigurationError, match=r"at least 0\.001"):
            Interval(bad)  # type: ignore[arg-type]  # what a caller without types may pass


def test_cron_in_utc_and_in_a_zone() -> None:
    assert Cron("*/5 * * * *").next_after(ts(2026, 1, 5, 12, 1)) == ts(2026, 1, 5, 12, 5)
    monday_9_moscow = Cron("0 9 * * 1", tz="Europe/Moscow")
    assert monday_9_moscow.next_after(ts(2026, 1, 1)) == ts(2026, 1, 5, 6, 0)  # UTC+3
    assert Cron("@daily").next_after(ts(2026, 1, 5, 0, 0)) == ts(2026, 1, 6)


def test_a_time_skipped_by_spring_forward_fires_when_the_clocks_jump() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    daily = Cron("30 2 * * *", tz="Europe/Berlin")
    got = fires(daily, ts(2026, 3, 28, 12, tz=BERLIN), 2)
    assert got == [
        datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN),
        datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN),
    ]


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    daily = Cron("30 2 * * *", tz="Europe/Berlin")
    got = fires(daily, ts(2026, 10, 24, 12, tz=BERLIN), 2)
    assert got[0] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30 (CEST)
    assert got[1] == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # next day's 02:30 (CET)


def test_an_every_hour_expression_runs_in_the_repeated_hour() -> None:
    half_hourly = Cron("*/30 * * * *", tz="Europe/Berlin")
    got = fires(half_hourly, ts(2026, 10, 24, 23, 50, tz=UTC), 5)
    step = [b - a for a, b in itertools.pairwise(got)]
    assert step == [timedelta(minutes=30)] * 4  # steady in UTC through the change


def test_once() -> None:
    once = Once.at_datetime(datetime(2026, 1, 1, tzinfo=UTC))
    assert once.next_after(once.at - 1) == once.at
    assert once.next_after(once.at) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "not cron"}, "bad cron expression"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "0 0 1 1 * 0 2020"}, "never fires"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"interval": 0}, "positive"),
        ({"interval": -5}, "positive"),
        ({"interval": "10"}, "positive"),
        ({"interval": True}, "positive"),
        ({"cron": "* * * * *", "interval": 5}, "one of"),
        ({}, "one of"),
        ({"interval": 5, "tz": "UTC"}, "'tz' goes with 'cron'"),
        ({"interval": 5, "every": 3}, "unknown schedule key"),
        ({"interval": 5, "args": "x"}, "args must be a list"),
        ({"interval": 5, "kwargs": [1]}, "kwargs must be a dict"),
        ({"time": "yesterday"}, "must be a datetime"),
        ("*/5 * * * *", "must be a dict"),
    ],
)
def test_bad_schedules_are_refused(spec: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_schedule(spec)


def test_a_bad_schedule_label_fails_the_declaration_naming_the_task() -> None:
    broker = InMemoryBroker()
    with pytest.raises(ConfigurationError, match=r"task 'reports.daily'.*bad cron expression"):

        @broker.task("reports.daily", schedule=[{"interval": 60}, {"cron": "0 25 * * *"}])
        def daily() -> None: ...

    with pytest.raises(ConfigurationError, match=r"task 'reports.never'.*never fires"):

        @broker.task("reports.never", schedule=[{"cron": "0 0 31 4 *"}])
        def never() -> None: ...

    with pytest.raises(ConfigurationError, match=r"task 'reports.tz'.*unknown time zone"):

        @broker.task("reports.tz", schedule=[{"cron": "0 9 * * *", "tz": "Europe/Atlantis"}])
        def tz() -> None: ...

    with pytest.raises(ConfigurationError, match=r"task 'reports.args'.*do not fit"):

        @broker.task("reports.args", schedule=[{"interval": 60, "args": [1, 2]}])
        def args(n: int) -> None: ...

    with pytest.raises(ConfigurationError, match=r"task 'reports.labels': priority"):

        @broker.task("reports.labels", schedule=[{"interval": 60, "labels": {"priority": 99}}])
        def labels() -> None: ...

    with pytest.raises(ConfigurationError, match="list of schedules"):

        @broker.task("reports.one", schedule={"interval": 60})
        def one() -> None: ...


def test_label_schedules_have_ids_stable_across_processes() -> None:
    spec: list[dict[str, Any]] = [
        {"cron": "0 9 * * 1", "tz": "Europe/Moscow", "args": [1]},
        {"interval": 30},
    ]
    first = parse_label_schedules("app:report", spec)
    again = parse_label_schedules("app:report", [dict(s) for s in spec])
    assert [e.id for e in first] == [e.id for e in again]
    assert len({e.id for e in first}) == 2
    assert first[0].args == [1]
    assert first[0].schedule == Cron("0 9 * * 1", "Europe/Moscow")
    assert run_id(first[0].id, 1000) == run_id(again[0].id, 1000) != run_id(first[1].id, 1000)


def test_the_schedule_label_is_kept_off_the_messages() -> None:
    broker = InMemoryBroker()

    @broker.task(schedule=[{"interval": 30}], queue="reports")
    async def report(n: int = 0) -> None: ...

    assert [e.schedule for e in report.schedules] == [Interval(30)]
    assert report.labels == {"queue": "reports"}
    assert Scheduler(broker).label_entries() == report.schedules


def test_stored_entries_round_trip() -> None:
    for schedule in (Cron("*/5 * * * *", "Asia/Tokyo"), Interval(2.5, anchor=7.0), Once(9.5)):
        entry = ScheduleEntry("id1", "t", schedule, [1], {"k": 2}, {"queue": "q"}, stored=True)
        assert ScheduleEntry.from_json(entry.to_json()) == entry
    with pytest.raises(ConfigurationError, match="unreadable"):
        ScheduleEntry.from_json(b'{"id": "x"}')


def test_scheduler_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="misfire"):
        Scheduler(InMemoryBroker(), misfire="twice")
    for grace in (0.0, 0.5, float("nan")):
        with pytest.raises(ConfigurationError, match="misfire_grace must be at least 1"):
            Scheduler(InMemoryBroker(), misfire_grace=grace)


def test_a_cron_that_stops_firing_has_no_next_time() -> None:
    yearly = Cron("0 0 1 1 * 0 2030")
    assert yearly.next_after(ts(2029, 6, 1)) == ts(2030, 1, 1)
    assert yearly.next_after(ts(2030, 6, 1)) is None
    with pytest.raises(ConfigurationError, match="never fires"):
        Cron("0 0 30 2 *", tz="Europe/Berlin")
