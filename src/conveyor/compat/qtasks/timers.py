"""QTasks' `AsyncTimer`: runs tasks on triggers (APScheduler's `CronTrigger` and friends, in
`conveyor.compat.qtasks.triggers`) through conveyor's scheduler.

A timer schedule is a label schedule of the task: every process with the app knows it, and each
run is sent once however many run the schedules. `timer.run_forever()` runs a worker and the
schedules in this process, so the seed's `python main.py` both sends and runs the reminders.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conveyor.compat.qtasks.asyncio import QueueTasks, run_options
from conveyor.compat.qtasks.triggers import Trigger
from conveyor.errors import TaskNotFound
from conveyor.schedules import ScheduleEntry

__all__ = ["AsyncTimer"]


class AsyncTimer:
    """Sends an app's tasks on triggers."""

    def __init__(self, app: QueueTasks, **options: Any) -> None:
        self.app = app

    def add_task(
        self,
        *positional: Any,
        task_name: str | None = None,
        trigger: Trigger,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> str:
        """Run a task on `trigger`: `add_task("name", trigger=..., args=(...))`, or QTasks'
        other spelling `add_task(*args, task_name="name", trigger=...)`.

        Returns:
            The schedule's id.

        Raises:
            TaskNotFound: no task of that name is registered on the app.
        """
        if task_name is None:
            task_name, *rest = positional
            positional = tuple(rest)
        task = self.app.broker.find_task(task_name)
        if task is None:
            raise TaskNotFound(f"no task named {task_name!r} in {self.app.name}")
        call_args = [*positional, *(args or ())]
        labels = {} if priority is None else {"priority": priority}
        schedule = trigger.schedule()
        digest = hashlib.sha1(
            repr((schedule, call_args, kwargs, labels)).encode(), usedforsecurity=False
        ).hexdigest()[:12]
        entry = ScheduleEntry(
            id=f"label:{task_name}:timer-{digest}",
            task_name=task_name,
            schedule=schedule,
            args=call_args,
            kwargs=dict(kwargs or {}),
            labels=labels,
        )
        task.schedules.append(entry)
        return entry.id

    def run_forever(self, **options: Any) -> None:
        """Run a worker and the schedules in this process until SIGINT/SIGTERM."""
        self.app.broker.run(**run_options(self.app.config, options))
