"""The metrics of `conveyor.prometheus` through the OpenTelemetry metrics API.

Each process counts what it runs, from the middleware's hooks; the collector adds the processes
up (`/metrics` instead reads the sums the workers keep in the broker):

- `conveyor.tasks.received` / `.succeeded` / `.failed` / `.retried` / `.cancelled`: counters
  with the attribute `task_name` (`<unknown>` for a name this process has no task for);
- `conveyor.task.duration`: a histogram in seconds, on the buckets of `conveyor.state.BUCKETS`.

A Prometheus exporter names them as `/metrics` does (`conveyor_tasks_received_total`,
`conveyor_task_duration_seconds`). With `cluster_seconds` the process also reads the broker that
often and reports the cluster's gauges, the same numbers from every process that does:
`conveyor.queue.depth` (`queue`, `state`), `conveyor.tasks.in_flight` and `conveyor.workers`.

Instruments are made on first use once an SDK's meter provider is there (`ProviderCheck`); until
then a hook costs a clock reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation

# The API's stand-in until an SDK sets a provider: recording through it is wasted work.
from opentelemetry.metrics._internal import _ProxyMeterProvider

from conveyor import __version__
from conveyor.inspector import Inspector, WorkerInfo
from conveyor.otel.providers import ProviderCheck
from conveyor.result import TaskResult, TaskStatus
from conveyor.state import BUCKETS, COUNTER_HELP, COUNTERS

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.engines.base import QueueStats

__all__ = ["UNKNOWN_TASK", "TaskMetrics"]

log = logging.getLogger(__name__)

#: The `task_name` of runs whose task this process does not have (as `/metrics` counts them).
UNKNOWN_TASK = "<unknown>"

_COUNTED = {
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.RETRYING: "retried",
    TaskStatus.CANCELLED: "cancelled",
}
_NO_SDK = (_ProxyMeterProvider, metrics.NoOpMeterProvider)


@dataclass(slots=True)
class _Cluster:
    """The last reading of the broker's queues and workers."""

    queues: list[QueueStats] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)


class TaskMetrics:
    """Counts one process's task runs, and with `cluster_seconds` reports the cluster's gauges.

    Args:
        provider: where metrics go; the global provider (looked up until an SDK sets one) if None.
        cluster_seconds: how often to read the queues and workers from the broker; None: never.
    """

    def __init__(self, provider: metrics.MeterProvider | None, cluster_seconds: float | None):
        self.check = ProviderCheck(provider, metrics.get_meter_provider, _NO_SDK)
        self.cluster_seconds = cluster_seconds
        self.cluster: _Cluster | None = None  # None until the broker was read
        self._counters: dict[str, Counter] = {}
        self._duration: Histogram | None = None

    def ready(self) -> bool:
        """True once an SDK's meter provider is there (the instruments are then made)."""
        if self._duration is None:
            provider = self.check.found()
            if provider is None:
                return False
            self._instruments(provider.get_meter("conveyor", __version__))
        return True

    def received(self, task_name: str) -> None:
        """Count a run that starts."""
        if self.ready():
            self._counters["received"].add(1, {"task_name": task_name})

    def ended(self, task_name: str, result: TaskResult[Any]) -> None:
        """Count how a run ended and how long it took (call once `ready()`)."""
        counter = _COUNTED.get(result.status)
        if counter is None or self._duration is None:
            return
        attributes = {"task_name": task_name}
        self._counters[counter].add(1, attributes)
        self._duration.record(result.execution_time or 0.0, attributes)

    async def watch(self, broker: Broker) -> None:
        """Read the cluster's queues and workers every `cluster_seconds`, for ever."""
        assert self.cluster_seconds is not None
        inspector = Inspector(broker)
        while True:
            try:
                self.cluster = _Cluster(await inspector.queues(), await inspector.workers())
                self.ready()
            except Exception:  # an outage: report the last reading
                log.warning("could not read metrics from the broker", exc_info=True)
            await asyncio.sleep(self.cluster_seconds)

    def _instruments(self, meter: Meter) -> None:
        for name in COUNTERS:
            self._counters[name] = meter.create_counter(
                f"conveyor.tasks.{name}", unit="{run}", description=COUNTER_HELP[name]
            )
        self._duration = meter.create_histogram(
            "conveyor.task.duration",
            unit="s",
            description="Seconds task runs took.",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        if self.cluster_seconds is None:
            return
        meter.create_observable_gauge(
            "conveyor.queue.depth",
            [self._depth],
            unit="{message}",
            description="Messages in a queue by state.",
        )
        meter.create_observable_gauge(
            "conveyor.tasks.in_flight",
            [self._in_flight],
            unit="{run}",
            description="Tasks running now, from the workers' heartbeats.",
        )
        meter.create_observable_gauge(
            "conveyor.workers",
            [self._workers],
            unit="{process}",
            description="Worker processes with a live heartbeat.",
        )

    def _depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        for queue in self.cluster.queues if self.cluster else ():
            for state in ("ready", "scheduled", "running"):
                yield Observation(getattr(queue, state), {"queue": queue.name, "state": state})

    def _in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self.cluster is not None:
            yield Observation(sum(len(worker.running) for worker in self.cluster.workers))

    def _workers(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self.cluster is not None:
            yield Observation(len(self.cluster.workers))
