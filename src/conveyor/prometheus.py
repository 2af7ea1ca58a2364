"""Prometheus metrics of a whole conveyor cluster, read from the broker.

Every worker process counts its tasks in memory and adds the counts to the broker every second
(`conveyor.worker.stats`), so the numbers here are the sum over all workers and processes, right
with `--workers N` and after restarts. `conveyor web` serves them at `/metrics`;
`PrometheusMiddleware` serves the same numbers from a worker or an app (taskiq's way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.inspector import Inspector
from conveyor.middleware.base import Middleware
from conveyor.state import BUCKETS, COUNTER_HELP, COUNTERS

try:
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "metrics need prometheus-client: pip install 'conveyor[web]'", name=exc.name
    ) from exc

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.engines.base import QueueStats
    from conveyor.inspector import TaskCounts, WorkerInfo

__all__ = ["ClusterMetrics", "PrometheusMiddleware", "read_metrics", "render_metrics"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClusterMetrics:
    """One reading of the broker: task counts, queues and live workers."""

    tasks: dict[str, TaskCounts] = field(default_factory=dict)
    queues: list[QueueStats] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)


async def read_metrics(broker: Broker) -> ClusterMetrics:
    """Read the cluster-wide numbers from `broker`."""
    inspector = Inspector(broker)
    return ClusterMetrics(
        await inspector.task_counts(), await inspector.queues(), await inspector.workers()
    )


class _Snapshot(Collector):
    """Yields the metric families of the last `ClusterMetrics` it was given."""

    def __init__(self, metrics: ClusterMetrics | None = None) -> None:
        self.metrics = metrics or ClusterMetrics()

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        for counter in COUNTERS:
            family = CounterMetricFamily(
                f"conveyor_tasks_{counter}", COUNTER_HELP[counter], labels=["task_name"]
            )
            for name, counts in metrics.tasks.items():
                family.add_metric([name], counts.counters.get(counter, 0))
            yield family
        yield _histogram(metrics, BUCKETS)
        yield from _gauges(metrics)


def _histogram(metrics: ClusterMetrics, bounds: tuple[float, ...]) -> Metric:
    family = HistogramMetricFamily(
        "conveyor_task_duration_seconds", "Seconds task runs took.", labels=["task_name"]
    )
    for name, counts in metrics.tasks.items():
        running, buckets = 0, []
        for index, bound in enumerate((*bounds, math.inf)):
            running += counts.buckets.get(index, 0)
            buckets.append(("+Inf" if bound == math.inf else repr(bound), running))
        family.add_metric([name], buckets, counts.duration_sum)
    return family


def _gauges(metrics: ClusterMetrics) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "conveyor_queue_depth", "Messages in a queue by state.", labels=["queue", "state"]
    )
    for queue in metrics.queues:
        depth.add_metric([queue.name, "ready"], queue.ready)
        depth.add_metric([queue.name, "scheduled"], queue.scheduled)
        depth.add_metric([queue.name, "running"], queue.running)
    yield depth
    yield GaugeMetricFamily(
        "conveyor_tasks_in_flight",
        "Tasks running now, from the workers' heartbeats.",
        value=sum(len(worker.running) for worker in metrics.workers),
    )
    yield GaugeMetricFamily(
        "conveyor_workers", "Worker processes with a live heartbeat.", value=len(metrics.workers)
    )


def render_metrics(metrics: ClusterMetrics) -> bytes:
    """The Prometheus text exposition of `metrics`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(metrics))
    return generate_latest(registry)


class PrometheusMiddleware(Middleware):
    """Expose the cluster's task metrics through prometheus-client in this process.

    On startup it registers a collector in `registry` (prometheus-client's default one unless
    given) that is refreshed from the broker every `refresh_seconds`, and, with `server_port`,
    serves it over HTTP. The numbers are cluster-wide, so with `--workers N` whichever process
    binds the port first serves them and the others skip the server.

    Args:
        server_addr: address of the metrics HTTP server.
        server_port: its port; None to only fill `registry` (served by your own app).
        registry: the prometheus-client registry to fill.
        refresh_seconds: how often the numbers are read from the broker.
    """

    def __init__(
        self,
        server_addr: str = "0.0.0.0",
        server_port: int | None = 9000,
        registry: CollectorRegistry | None = None,
        refresh_seconds: float = 5.0,
    ) -> None:
        self.server_addr = server_addr
        self.server_port = server_port
        self.registry = registry if registry is not None else REGISTRY
        self.refresh_seconds = refresh_seconds
        self.collector = _Snapshot()
        self._registered = False
        self._refresher: asyncio.Task[None] | None = None
        self._server: Any = None

    async def startup(self) -> None:
        """Register the collector, start refreshing it and start the HTTP server if asked."""
        if not self._registered:
            self.registry.register(self.collector)
            self._registered = True
        self._refresher = asyncio.create_task(self._refresh(), name="conveyor-prometheus")
        if self.server_port is not None and self._server is None:
            try:
                self._server, _ = start_http_server(
                    self.server_port, self.server_addr, self.registry
                )
            except OSError as exc:  # another process of the cluster serves the same numbers
                log.info("metrics port %s not bound here: %s", self.server_port, exc)

    async def shutdown(self) -> None:
        """Stop refreshing and stop the HTTP server."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)  # waits up to its 0.5 s poll: not in the loop
            server.server_close()

    async def _refresh(self) -> None:
        await asyncio.sleep(min(1.0, self.refresh_seconds))  # let the broker finish starting
        while True:
            try:
                self.collector.metrics = await read_metrics(self.broker)
            except Exception:  # an outage: keep serving the last numbers
                log.warning("could not read metrics from the broker", exc_info=True)
            await asyncio.sleep(self.refresh_seconds)
