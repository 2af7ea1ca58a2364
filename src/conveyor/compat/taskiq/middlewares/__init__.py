"""Taskiq's `taskiq.middlewares`."""

from typing import TYPE_CHECKING

from conveyor.compat.taskiq._retry import SimpleRetryMiddleware, SmartRetryMiddleware

if TYPE_CHECKING:  # imported on first use: prometheus-client is the `web` extra
    from conveyor.prometheus import PrometheusMiddleware


def __getattr__(name: str) -> object:
    """`PrometheusMiddleware`, imported only when used."""
    if name == "PrometheusMiddleware":
        from conveyor.prometheus import PrometheusMiddleware

        return PrometheusMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PrometheusMiddleware", "SimpleRetryMiddleware", "SmartRetryMiddleware"]
