"""Taskiq's scheduling on conveyor's `Scheduler`: `ScheduledTask`, the schedule sources and
`TaskiqScheduler`.

conveyor's scheduler already has the two sources Taskiq users need: the `schedule` labels of the
tasks (`LabelScheduleSource`) and schedules stored in the broker's own state store
(`StoreScheduleSource`, which `taskiq_redis.RedisScheduleSource` and the other dynamic sources
are); each due run is sent once however many schedulers run. A source written for Taskiq (a
`ScheduleSource` subclass with its own `get_schedules`) is read again every `refresh_delay`.
`kicker().schedule_by_cron/interval/time(source, ...)` store through any source's `add`, which
returns a `CreatedSchedule` (`.schedule_id`, `.unschedule()`).
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigurationError
from conveyor.scheduler import Cron, Interval, Schedule, ScheduleEntry, Scheduler
from conveyor.schedules import parse_schedule
from conveyor.task import Signature

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = [
    "CreatedSchedule",
    "LabelScheduleSource",
    "ScheduleSource",
    "ScheduledTask",
    "StoreScheduleSource",
    "TaskiqScheduler",
]


@dataclasses.dataclass(kw_only=True)
class ScheduledTask:
    """One schedule: the call and when (exactly one of `cron`, `time`, `interval`).

    Raises:
        ConfigurationError: (a ValueError) none or several of `cron`, `time`, `interval`, or a
            bad cron expression or time zone.
    """

    task_name: str
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_id: str | None = None
    schedule_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    cron: str | None = None
    cron_offset: str | timedelta | None = None
    time: datetime | None = None
    interval: int | float | timedelta | None = None

    def __post_init__(self) -> None:
        self.schedule()  # checked now, not at the first fire

    def schedule(self) -> Schedule:
        """When it fires, as a conveyor schedule."""
        spec = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return parse_schedule(
            {k: spec[k] for k in ("cron", "cron_offset", "time", "interval") if k in spec}
        )

    def entry(self, prefix: str = "source:") -> ScheduleEntry:
        """The conveyor schedule entry of this schedule."""
        return ScheduleEntry(
            id=f"{prefix}{self.schedule_id}",
            task_name=self.task_name,
            schedule=self.schedule(),
            args=list(self.args),
            kwargs=dict(self.kwargs),
            labels=dict(self.labels),
        )

    @classmethod
    def from_entry(cls, entry: ScheduleEntry, schedule_id: str | None = None) -> ScheduledTask:
        """The `ScheduledTask` of a conveyor schedule entry."""
        when = _when(entry.schedule)
        return cls(
            task_name=entry.task_name,
            labels=dict(entry.labels),
            args=list(entry.args),
            kwargs=dict(entry.kwargs),
            schedule_id=schedule_id or entry.id,
            **when,
        )


def _when(schedule: Schedule) -> dict[str, Any]:
    if isinstance(schedule, Cron):
        return {"cron": schedule.expression, "cron_offset": schedule.tz}
    if isinstance(schedule, Interval):
        return {"interval": schedule.seconds}
    return {"time": datetime.fromtimestamp(schedule.at, UTC)}


class ScheduleSource(abc.ABC):
    """Where a `TaskiqScheduler` finds schedules. Subclass it and write `get_schedules` (and
    `add_schedule` / `delete_schedule` for a source that stores them)."""

    async def startup(self) -> None:  # optional hook
        """Called when the scheduler starts."""

    async def shutdown(self) -> None:  # optional hook
        """Called when the scheduler stops."""

    @abc.abstractmethod
    async def get_schedules(self) -> list[ScheduledTask]:
        """Every schedule this source has now."""

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        """Store a schedule.

        Raises:
            NotImplementedError: the source cannot store schedules.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot add schedules")

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a stored schedule.

        Raises:
            NotImplementedError: the source cannot delete schedules.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete schedules")

    def pre_send(self, task: ScheduledTask) -> Any:
        """Called before a run of `task` is sent (sync or async)."""

    def post_send(self, task: ScheduledTask) -> Any:
        """Called after a run of `task` was sent (sync or async)."""

    def bind(self, broker: Broker) -> None:
        """Called with the broker whose tasks the source's schedules run; nothing here."""

    async def add(
        self, signature: Signature[Any], schedule: Schedule, *, schedule_id: str | None = None
    ) -> CreatedSchedule:
        """Store a schedule of `signature` (what `schedule_by_cron/interval/time` call)."""
        if signature.task is not None:
            self.bind(signature.task.broker)
        scheduled = ScheduledTask(
            task_name=signature.task_name,
            labels=dict(signature.labels),
            args=list(signature.args),
            kwargs=dict(signature.kwargs),
            schedule_id=schedule_id or uuid.uuid4().hex,
            **_when(schedule),
        )
        await self.add_schedule(scheduled)
        return CreatedSchedule(self, scheduled, signature)


class CreatedSchedule:
    """A schedule just stored: its id, and a way to remove it or to send its call now."""

    def __init__(
        self, source: ScheduleSource, task: ScheduledTask, signature: Signature[Any] | None = None
    ) -> None:
        self.source = source
        self.task = task
        self.schedule_id = task.schedule_id
        self._signature = signature

    def __str__(self) -> str:
        return f"CreatedSchedule(id={self.schedule_id}, task_name={self.task.task_name})"

    async def unschedule(self) -> None:
        """Delete the schedule from its source."""
        await self.source.delete_schedule(self.schedule_id)

    async def kiq(self) -> Any:
        """Send the scheduled call now, as if it were not scheduled."""
        if self._signature is None or self._signature.task is None:
            raise ConfigurationError(f"schedule {self.schedule_id}: its task is not known here")
        task = self._signature.task
        return (
            await task.kicker()
            .with_labels(**self.task.labels)
            .kiq(*self.task.args, **self.task.kwargs)
        )


class LabelScheduleSource(ScheduleSource):
    """The `schedule=[...]` labels of a broker's tasks."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def get_schedules(self) -> list[ScheduledTask]:
        """The schedules the broker's tasks declare."""
        entries = Scheduler(self.broker).label_entries()  # ids: label:<task>:<schedule id>
        return [ScheduledTask.from_entry(e, e.id.rpartition(":")[2]) for e in entries]


class StoreScheduleSource(ScheduleSource):
    """Schedules added at run time, stored in the broker's state store (conveyor's stored
    schedules: `conveyor inspect schedules` lists them, any number of schedulers send each run
    once). The broker is the scheduler's, or the task's when a schedule is added first."""

    def __init__(self, broker: Broker | None = None) -> None:
        self.broker = broker

    def bind(self, broker: Broker) -> None:
        """Use `broker`'s state store unless the source already has one."""
        if self.broker is None:
            self.broker = broker

    def _scheduler(self) -> Scheduler:
        if self.broker is None:
            raise ConfigurationError(
                f"{type(self).__name__} has no broker yet: give it to a TaskiqScheduler"
                " or schedule a task through it first"
            )
        return Scheduler(self.broker)

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        """Store `schedule` under its `schedule_id` (replacing one with that id)."""
        scheduler = self._scheduler()
        signature = _signature(scheduler.broker, schedule)
        await scheduler.add(signature, schedule.schedule(), schedule_id=schedule.schedule_id)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a stored schedule (nothing happens for an unknown id)."""
        await self._scheduler().remove(schedule_id)

    async def get_schedules(self) -> list[ScheduledTask]:
        """Every stored schedule."""
        entries = await self._scheduler().stored_entries()
        return [ScheduledTask.from_entry(entry) for entry in entries]


def _signature(broker: Broker, schedule: ScheduledTask) -> Signature[Any]:
    return Signature(
        schedule.task_name,
        tuple(schedule.args),
        dict(schedule.kwargs),
        labels=dict(schedule.labels),
        task=broker.find_task(schedule.task_name),
    )


class TaskiqScheduler(Scheduler):
    """Taskiq's scheduler: conveyor's `Scheduler` reading the given sources only.

    Run it with `conveyor scheduler module:scheduler` (or `taskiq scheduler`'s other spellings
    of the same), or with `conveyor worker module:broker --with-scheduler` when its sources
    are the label and store ones.

    Args:
        broker: the broker the runs are sent through.
        sources: `LabelScheduleSource`, a store source (`RedisScheduleSource`, ...) and any
            `ScheduleSource` of your own.
        refresh_delay: seconds between two reads of your own sources.
        merge_func: accepted; conveyor keeps every source's schedules.
    """

    def __init__(
        self,
        broker: Broker,
        sources: Sequence[ScheduleSource],
        merge_func: Any = None,
        refresh_delay: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(broker, **options)
        self.sources = list(sources)
        self.refresh_delay = refresh_delay
        for source in self.sources:
            source.bind(broker)
        self._own = [
            s for s in self.sources if not isinstance(s, LabelScheduleSource | StoreScheduleSource)
        ]
        self._own_entries: dict[str, tuple[ScheduleSource, ScheduledTask]] = {}
        self._own_read = float("-inf")

    def label_entries(self) -> list[ScheduleEntry]:
        """The label schedules (with a `LabelScheduleSource`) and your sources' schedules."""
        labels = super().label_entries() if self._has(LabelScheduleSource) else []
        return labels + [task.entry() for _, task in self._own_entries.values()]

    async def stored_entries(self) -> list[ScheduleEntry]:
        """The stored schedules, with a store source."""
        return await super().stored_entries() if self._has(StoreScheduleSource) else []

    def _has(self, kind: type[ScheduleSource]) -> bool:
        return any(isinstance(source, kind) for source in self.sources)

    async def tick(self, now: float | None = None) -> float:
        """Read your own sources when `refresh_delay` has passed, then send what is due."""
        if self._own and time.monotonic() - self._own_read >= self.refresh_delay:
            found: dict[str, tuple[ScheduleSource, ScheduledTask]] = {}
            for source in self._own:
                for task in await source.get_schedules():
                    found[f"source:{task.schedule_id}"] = (source, task)
            self._own_entries, self._own_read = found, time.monotonic()
        return await super().tick(now)

    async def on_sent(self, entry: ScheduleEntry, at: float) -> None:
        """Tell your own source that its schedule's run was sent."""
        own = self._own_entries.get(entry.id)
        if own is not None:
            outcome = own[0].post_send(own[1])
            if inspect.isawaitable(outcome):
                await outcome

    async def startup(self) -> None:
        """Start the broker and the sources."""
        await super().startup()
        for source in self.sources:
            await source.startup()

    async def shutdown(self) -> None:
        """Stop the sources and the broker."""
        for source in self.sources:
            await source.shutdown()
        await super().shutdown()
