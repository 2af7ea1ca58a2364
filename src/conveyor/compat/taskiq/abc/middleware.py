"""Taskiq's `taskiq.abc.middleware`."""

from conveyor.middleware import TaskiqMiddleware

__all__ = ["TaskiqMiddleware"]
