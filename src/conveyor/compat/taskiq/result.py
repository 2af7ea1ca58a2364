"""Taskiq's `taskiq.result`."""

from conveyor.compat.taskiq._result import TaskiqResult

__all__ = ["TaskiqResult"]
