"""Taskiq's `taskiq.middlewares.retry_middleware` (the path of older releases)."""

from conveyor.compat.taskiq._retry import SimpleRetryMiddleware

__all__ = ["SimpleRetryMiddleware"]
