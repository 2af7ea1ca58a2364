"""Taskiq's `taskiq.scheduler` (and `.scheduled_task`, `.created_schedule`)."""

from conveyor.compat.taskiq._schedules import CreatedSchedule, ScheduledTask, TaskiqScheduler

__all__ = ["CreatedSchedule", "ScheduledTask", "TaskiqScheduler"]
