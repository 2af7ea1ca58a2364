"""Taskiq's `taskiq.task`."""

from conveyor.compat.taskiq._result import AsyncTaskiqTask

__all__ = ["AsyncTaskiqTask"]
