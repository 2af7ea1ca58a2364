"""`Kicker`: the per-call builder behind `task.kicker()`: labels, id, delay, ETA, queue, broker,
and the caller's database connection for a transactional enqueue; it sends the call now (`kiq`)
or stores a schedule of it (`schedule_by_cron/interval/time`, with its labels).

Each `with_*` returns a new kicker, so one can be kept and reused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from conveyor.engines.base import Publisher
from conveyor.options import TaskOptions
from conveyor.schedules import Cron, Interval, Once, Schedule

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.portal import SyncTaskHandle
    from conveyor.result import TaskHandle
    from conveyor.task import Schedules, Task

__all__ = ["Kicker"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


class Kicker(Generic[P, R]):
    """Options for one send of a task; `kiq` sends it."""

    __slots__ = ("_broker", "_labels", "_publisher", "_schedule_id", "_task", "_task_id")

    def __init__(
        self,
        task: Task[P, R],
        labels: dict[str, Any] | None = None,
        task_id: str | None = None,
        broker: Broker | None = None,
        publisher: Publisher | None = None,
        schedule_id: str | None = None,
    ) -> None:
        self._task = task
        self._labels = labels or {}
        self._task_id = task_id
        self._broker = broker
        self._publisher = publisher
        self._schedule_id = schedule_id

    def _with(self, labels: dict[str, Any] | None = None, **changes: Any) -> Kicker[P, R]:
        merged = {**self._labels, **labels} if labels else self._labels
        if labels:
            TaskOptions.parse(merged, self._task.name)
        return Kicker(
            self._task,
            merged,
            changes.get("task_id", self._task_id),
            changes.get("broker", self._broker),
            changes.get("publisher", self._publisher),
            changes.get("schedule_id", self._schedule_id),
        )

    def with_labels(self, **labels: Any) -> Kicker[P, R]:
        """Add or override labels for this send."""
        return self._with(labels)

    def with_task_id(self, task_id: str) -> Kicker[P, R]:
        """Send under this id instead of a generated one (see the `unique_for` label)."""
        return self._with(task_id=task_id)

    def with_delay(self, seconds: float) -> Kicker[P, R]:
        """Run no earlier than `seconds` from now."""
        return self._with({"delay": seconds, "eta": None})

    def with_eta(self, eta: datetime) -> Kicker[P, R]:
        """Run no earlier than `eta` (a naive datetime is local time)."""
        return self._with({"eta": eta, "delay": None})

    def with_queue(self, queue: str) -> Kicker[P, R]:
        """Send to another queue."""
        return self._with({"queue": queue})

    def with_priority(self, priority: int) -> Kicker[P, R]:
        """Set the priority, 0-9, higher first."""
        return self._with({"priority": priority})

    def with_schedule_id(self, schedule_id: str) -> Kicker[P, R]:
        """Store the next `schedule_by_*` under this id instead of a new one."""
        return self._with(schedule_id=schedule_id)

    def with_broker(self, broker: Broker) -> Kicker[P, R]:
        """Send through another broker. The task is registered on it too (same name, labels
        and function), so a worker running in this process for it can run the task; workers
        elsewhere must know the task name."""
        return self._with(broker=broker)

    def with_connection(self, connection: object) -> Kicker[P, R]:
        """Enqueue inside the caller's open transaction on `connection` (asyncpg, psycopg,
        SQLAlchemy or Django, PostgreSQL engine): workers see the task only once it commits,
        and a rollback leaves nothing.

        Raises:
            ConfigurationError: the broker's engine cannot, or `connection` is not one it can use.
        """
        transport = (self._broker or self._task.broker).transport
        return self._with(publisher=transport.transactional(connection))

    async def kiq(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Send the task with these options and return a handle to its result."""
        broker = self._target()
        return await broker.send_task(
            self._task, args, kwargs, self._labels, self._task_id, self._publisher
        )

    def kiq_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncTaskHandle[R]:
        """`kiq` from synchronous code; returns a blocking handle."""
        from conveyor.portal import SyncTaskHandle, portal_for

        broker = self._target()
        handle = portal_for(broker).call(self.kiq(*args, **kwargs))
        return SyncTaskHandle(handle)

    async def schedule_by_cron(
        self, scheduler: Schedules[S], cron: str | Cron, *args: P.args, **kwargs: P.kwargs
    ) -> S:
        """Store a schedule sending this call, with these labels, at every time of `cron`.

        Raises:
            ConfigurationError: a bad cron expression or time zone.
        """
        return await self._schedule(
            scheduler, Cron(cron) if isinstance(cron, str) else cron, args, kwargs
        )

    async def schedule_by_interval(
        self,
        scheduler: Schedules[S],
        seconds: float | timedelta,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> S:
        """Store a schedule sending this call every `seconds`, the first in `seconds`."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        return await self._schedule(scheduler, Interval(seconds), args, kwargs)

    async def schedule_by_time(
        self, scheduler: Schedules[S], when: datetime, *args: P.args, **kwargs: P.kwargs
    ) -> S:
        """Store a one-off run of this call at `when` (a naive datetime is local time)."""
        return await self._schedule(scheduler, Once.at_datetime(when), args, kwargs)

    async def _schedule(
        self, scheduler: Schedules[S], schedule: Schedule, args: Any, kwargs: Any
    ) -> S:
        signature = self._task.s(*args, **kwargs).with_labels(**self._labels)
        return await scheduler.add(signature, schedule, schedule_id=self._schedule_id)

    def _target(self) -> Broker:
        """The broker to send through, knowing the task."""
        task, broker = self._task, self._broker
        if broker is None or broker is task.broker:
            return task.broker
        if broker.find_task(task.name) is None:
            broker.register_task(task.fn, task.name, retry_on=task.retry_on, **task.labels)
        return broker
