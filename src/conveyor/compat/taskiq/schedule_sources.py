"""Taskiq's `taskiq.schedule_sources`."""

from conveyor.compat.taskiq._schedules import LabelScheduleSource, StoreScheduleSource

__all__ = ["LabelScheduleSource", "StoreScheduleSource"]
