"""Taskiq's `taskiq.state`."""

from conveyor.compat.taskiq._broker import TaskiqState

__all__ = ["TaskiqState"]
