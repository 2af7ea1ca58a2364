"""What is measured: the counts of a run and the metrics each library session reports.

Shared by the harness, the driver (which may run in another venv) and the report, so it
imports nothing but the standard library.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

__all__ = ["FULL", "METRICS", "QUICK", "TARGETS", "Counts", "Metric", "Target", "metric"]


@dataclass(frozen=True)
class Counts:
    """How many tasks each scenario uses, and the settings shared by every library.

    Attributes:
        enqueue: tasks sent by single awaited calls, and again by the bulk API (a).
        bulk_batch: tasks per bulk call.
        drain: no-op tasks pre-enqueued, then drained by one worker process (b).
        sleep: tasks each awaiting `asyncio.sleep(0.01)` (c).
        latency: tasks sent at `latency_rate` per second for the latency scenario (d).
        latency_rate: the steady send rate of (d), tasks per second.
        concurrency: tasks one async worker process runs at once.
        poll: seconds between two checks for a result while waiting.
        timeout: seconds any one scenario may take before it is reported as failed.
        reference: requests of each one-at-a-time `redis-benchmark` test (`bench.reference`).
    """

    enqueue: int = 20_000
    bulk_batch: int = 1_000
    drain: int = 20_000
    sleep: int = 5_000
    latency: int = 600
    latency_rate: float = 200.0
    concurrency: int = 100
    poll: float = 0.002
    timeout: float = 180.0
    reference: int = 10_000

    def to_json(self) -> str:
        """The counts as a JSON object (passed to the driver)."""
        return json.dumps(dataclasses.asdict(self))

    def scaled(self, factor: float) -> Counts:
        """These counts with every task count multiplied by `factor` (at least 1 each)."""
        return dataclasses.replace(
            self,
            enqueue=max(1, round(self.enqueue * factor)),
            drain=max(1, round(self.drain * factor)),
            sleep=max(1, round(self.sleep * factor)),
            latency=max(1, round(self.latency * factor)),
            reference=max(1, round(self.reference * factor)),
        )

    @classmethod
    def from_json(cls, text: str) -> Counts:
        """Counts from `to_json`'s output."""
        return cls(**json.loads(text))


FULL = Counts()
QUICK = Counts(enqueue=2_000, drain=2_000, sleep=1_000, latency=300, timeout=60.0, reference=2_000)


@dataclass(frozen=True)
class Metric:
    """One figure of a library session.

    Attributes:
        key: the name in JSON and in the driver's records.
        label: a short column title.
        unit: what the number counts.
        higher_is_better: the direction in which a ratio reads as a win.
        scenario: the issue's letter for it.
    """

    key: str
    label: str
    unit: str
    higher_is_better: bool
    scenario: str


METRICS: tuple[Metric, ...] = (
    Metric("enqueue_single", "enq single", "tasks/s", True, "a"),
    Metric("enqueue_bulk", "enq bulk", "tasks/s", True, "a"),
    Metric("drain", "drain", "tasks/s", True, "b"),
    Metric("sleep", "sleep burst", "s", False, "c"),
    Metric("latency_p50", "lat p50", "ms", False, "d"),
    Metric("latency_p99", "lat p99", "ms", False, "d"),
    Metric("rss_peak", "peak RSS", "MB", False, "e"),
)


@dataclass(frozen=True)
class Target:
    """One of the issue's goals for a conveyor variant.

    Attributes:
        variant: the conveyor variant it is about.
        key: the metric.
        times: at least this many times the best peer's median (the ratio read so that
            higher is better: peer/conveyor for seconds, ms and MB), or None.
        limit: at most this absolute median (ms, MB), or None.
        at_least: at least this absolute median (tasks/s), or None.
    """

    variant: str
    key: str
    times: float | None = None
    limit: float | None = None
    at_least: float | None = None


#: The targets of the issues, in their order, each judged against the best peer of the
#: variant's group: PostgreSQL's (issue 18) against the PostgreSQL peers, SQLite's (issue 23)
#: against huey's SqliteHuey, RabbitMQ's against taskiq-aio-pika, Dramatiq and Celery, NATS's
#: against taskiq-nats.
TARGETS: tuple[Target, ...] = (
    Target("conveyor-redis", "drain", times=3.0),
    Target("conveyor-redis", "sleep", times=2.0),
    Target("conveyor-redis", "enqueue_single", times=1.0),
    Target("conveyor-redis", "enqueue_bulk", times=3.0),
    Target("conveyor-redis", "latency_p50", limit=0.4),
    Target("conveyor-redis", "latency_p99", limit=0.8),
    Target("conveyor-redis", "rss_peak", limit=40.0),
    Target("conveyor-postgres", "drain", times=3.0),
    Target("conveyor-postgres", "latency_p50", limit=2.0),
    Target("conveyor-postgres", "enqueue_bulk", at_least=20_000.0),
    # Issue 23, each against the best peer on its own server.
    Target("conveyor-redis", "drain", times=5.0),
    Target("conveyor-redis", "latency_p99", limit=1.0),
    Target("conveyor-redis", "enqueue_single", times=1.25),
    Target("conveyor-sqlite", "drain", times=1.0),
    Target("conveyor-sqlite", "latency_p99", limit=5.0),
    Target("conveyor-amqp", "drain", times=1.5),
    Target("conveyor-amqp", "latency_p50", limit=2.0),
    Target("conveyor-amqp", "latency_p99", limit=5.0),
    Target("conveyor-amqp", "enqueue_single", at_least=3_000.0),
    Target("conveyor-nats", "latency_p50", limit=1.0),
    Target("conveyor-nats", "latency_p99", limit=2.0),
    Target("conveyor-nats", "enqueue_single", times=1.0),
)


def metric(key: str) -> Metric:
    """The metric named `key`."""
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(key)
