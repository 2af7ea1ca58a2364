"""Taskiq's `taskiq.context`."""

from conveyor.compat.taskiq._broker import Context

__all__ = ["Context"]
