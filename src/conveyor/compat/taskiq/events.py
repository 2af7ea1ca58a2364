"""Taskiq's `taskiq.events`."""

from conveyor.compat.taskiq._broker import TaskiqEvents

__all__ = ["TaskiqEvents"]
