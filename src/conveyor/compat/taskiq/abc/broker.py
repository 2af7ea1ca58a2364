"""Taskiq's `taskiq.abc.broker`."""

from conveyor.compat.taskiq._broker import AsyncBroker
from conveyor.task import Task as AsyncTaskiqDecoratedTask

__all__ = ["AsyncBroker", "AsyncTaskiqDecoratedTask"]
