"""Taskiq's `taskiq.abc`."""

from conveyor.compat.taskiq._broker import AsyncBroker
from conveyor.compat.taskiq._schedules import ScheduleSource
from conveyor.middleware import TaskiqMiddleware

__all__ = ["AsyncBroker", "ScheduleSource", "TaskiqMiddleware"]
