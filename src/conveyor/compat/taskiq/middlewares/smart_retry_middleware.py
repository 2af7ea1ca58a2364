"""Taskiq's `taskiq.middlewares.smart_retry_middleware`."""

from conveyor.compat.taskiq._retry import SmartRetryMiddleware

__all__ = ["SmartRetryMiddleware"]
