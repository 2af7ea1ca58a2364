"""Middlewares: the base class and the built-in retry middlewares. `PrometheusMiddleware` is in
`conveyor.prometheus` (its extra is `web`), also importable as `conveyor.PrometheusMiddleware`."""

from conveyor.middleware.base import Middleware, TaskiqMiddleware
from conveyor.middleware.retry import SimpleRetryMiddleware, SmartRetryMiddleware

__all__ = ["Middleware", "SimpleRetryMiddleware", "SmartRetryMiddleware", "TaskiqMiddleware"]
