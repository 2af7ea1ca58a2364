"""Taskiq's `taskiq.message`."""

from conveyor.message import TaskiqMessage

__all__ = ["TaskiqMessage"]
