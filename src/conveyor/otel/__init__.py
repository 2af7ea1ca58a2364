"""OpenTelemetry for conveyor: traces, metrics and trace ids in the logs (extra `conveyor[otel]`).

    from conveyor.otel import OpenTelemetryMiddleware
    broker.add_middlewares([OpenTelemetryMiddleware()])

Only the OpenTelemetry API is needed at run time; the application configures the SDK and its
exporters (see `docs/observability.md`), best before the broker starts (one configured later is
picked up within a second, `conveyor.otel.providers`). Until it does, the middleware records
nothing and costs well under a microsecond per hook; a trace context that comes in with a
message is still passed on.
Spans follow the messaging conventions (`conveyor.otel.spans`), metrics mirror the Prometheus
endpoint (`conveyor.otel.metrics`), log records get `trace_id` and `span_id`
(`conveyor.otel.logs`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from conveyor.message import TaskMessage
from conveyor.middleware.base import Middleware
from conveyor.result import TaskResult

try:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracing needs opentelemetry-api: pip install 'conveyor[otel]'", name=exc.name
    ) from exc

from conveyor.otel.logs import install_log_correlation
from conveyor.otel.metrics import UNKNOWN_TASK, TaskMetrics
from conveyor.otel.spans import Tracing

__all__ = ["OpenTelemetryMiddleware"]


class OpenTelemetryMiddleware(Middleware):
    """Trace every send and run, count runs as metrics, and put trace ids in conveyor's logs.

    A send is a `send <queue>` span (kind PRODUCER) whose context travels in the message's
    labels; a run is a `process <queue>` span (kind CONSUMER), by default a child of the send
    span, so a web request, the tasks it sends and the tasks those send (workflow steps) are one
    trace. Retries, timeouts, cancellations and dead letters are events and statuses of the run
    spans; each attempt has its own span.

    Args:
        link: start a new trace for each run, linked to the send span, instead of a child span:
            better when one request fans out to thousands of tasks.
        tracer_provider: the provider of the spans; the global one if None.
        meter_provider: the provider of the metrics; the global one if None.
        cluster_metrics_seconds: also read the queues and workers from the broker this often
            and report them as gauges; None (default) to read nothing.
    """

    def __init__(
        self,
        *,
        link: bool = False,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        cluster_metrics_seconds: float | None = None,
    ) -> None:
        self.tracing = Tracing(tracer_provider, link)
        self.metrics = TaskMetrics(meter_provider, cluster_metrics_seconds)
        self._watcher: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Put trace ids in conveyor's logs; start reading the cluster's gauges if asked."""
        install_log_correlation()
        self.tracing.started(self.broker.transport.safe_url.partition("://")[0] or "unknown")
        self.metrics.check.again()
        if self.metrics.cluster_seconds is not None and self._watcher is None:
            self._watcher = asyncio.create_task(
                self.metrics.watch(self.broker), name="conveyor-otel-metrics"
            )

    async def shutdown(self) -> None:
        """Stop reading the cluster's gauges."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def pre_send(self, message: TaskMessage) -> TaskMessage:
        """Start the send span and put its context in the labels."""
        self.tracing.start_send(message)
        return message

    async def post_send(self, message: TaskMessage) -> None:
        """End the send span."""
        self.tracing.end_send(message)

    async def pre_execute(self, message: TaskMessage) -> TaskMessage:
        """Start the run span (current until the run ends) and count the run."""
        self.tracing.start_run(message)
        self.metrics.received(message.task_name)
        return message

    async def post_execute(self, message: TaskMessage, result: TaskResult[Any]) -> None:
        """Record the outcome on the run span and count it."""
        self.tracing.ran(message, result)
        if self.metrics.ready():
            known = self.broker.find_task(message.task_name) is not None
            self.metrics.ended(message.task_name if known else UNKNOWN_TASK, result)

    async def on_error(
        self, message: TaskMessage, result: TaskResult[Any], exception: BaseException
    ) -> None:
        """Record the exception on the run span."""
        self.tracing.failed(message, result, exception)

    async def post_save(self, message: TaskMessage, result: TaskResult[Any]) -> None:
        """End the run span."""
        self.tracing.saved(message, result)
