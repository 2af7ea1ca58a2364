"""Middlewares: the base class, the built-in retry middlewares and `PrometheusMiddleware`."""

from typing import TYPE_CHECKING

from conveyor.middleware.base import Middleware, TaskiqMiddleware
from conveyor.middleware.retry import SimpleRetryMiddleware, SmartRetryMiddleware

if TYPE_CHECKING:  # imported on first use: prometheus-client is the `web` extra
    from conveyor.middleware.prometheus import PrometheusMiddleware

__all__ = [
    "Middleware",
    "PrometheusMiddleware",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "TaskiqMiddleware",
]


def __getattr__(name: str) -> object:
    """`PrometheusMiddleware` imports prometheus-client (`conveyor[web]`) only when used."""
    if name == "PrometheusMiddleware":
        from conveyor.middleware.prometheus import PrometheusMiddleware

        return PrometheusMiddleware
    raise AttributeError(f"module 'conveyor.middleware' has no attribute {name!r}")
