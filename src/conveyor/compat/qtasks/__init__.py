"""QTasks' names on conveyor (the freelancer example of the seeds): `from qtasks.asyncio import
QueueTasks` becomes `from conveyor.compat.qtasks.asyncio import QueueTasks`, and likewise
`.registries.AsyncTask`, `.timers.AsyncTimer`; APScheduler's triggers, which QTasks' timers take,
are in `.triggers`.

With no broker URL the app is on conveyor's embedded SQLite default, so `python main.py` runs
a worker and the timer's schedules in one process with nothing else installed or running.
"""

from conveyor.compat.qtasks.asyncio import QueueTasks
from conveyor.compat.qtasks.registries import AsyncTask
from conveyor.compat.qtasks.timers import AsyncTimer
from conveyor.compat.qtasks.triggers import CronTrigger, DateTrigger, IntervalTrigger

__all__ = ["AsyncTask", "AsyncTimer", "CronTrigger", "DateTrigger", "IntervalTrigger", "QueueTasks"]
