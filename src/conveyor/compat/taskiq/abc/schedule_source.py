"""Taskiq's `taskiq.abc.schedule_source`."""

from conveyor.compat.taskiq._schedules import ScheduleSource

__all__ = ["ScheduleSource"]
