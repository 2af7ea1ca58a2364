"""Periodic and one-off runs of tasks: schedule values and the `Scheduler` that sends them."""

from conveyor.scheduler.loop import ScheduleInfo, Scheduler
from conveyor.schedules import Cron, Interval, Once, Schedule, ScheduleEntry

__all__ = ["Cron", "Interval", "Once", "Schedule", "ScheduleEntry", "ScheduleInfo", "Scheduler"]
