"""`OpenTelemetryMiddleware` in one process (across worker processes:
`tests/integration/test_otel_processes.py`): timeouts, cancels, dead letters, unknown tasks and
hand-backs on the run spans; scheduled runs; sends that fail; metrics; and nothing recorded
without an SDK, while a trace context that comes in is passed on.

Providers are given to the middleware, never set globally: the test process has no SDK.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

import conveyor.testing
from conveyor import Scheduler, SqliteBroker, TaskStatus
from conveyor.broker import Broker
from conveyor.otel import OpenTelemetryMiddleware
from conveyor.scheduler import Once
from conveyor.state import BUCKETS


@dataclass
class Traced:
    broker: Broker
    middleware: OpenTelemetryMiddleware
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer: trace.Tracer

    def runs(self, task_id: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if _id(s) == task_id and _kind(s) == "CONSUMER"
        ]


def _id(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get("messaging.message.id")


def _kind(span: ReadableSpan) -> str:
    return span.kind.name


def _broker(tmp_path: Path, **options: Any) -> Traced:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    middleware = OpenTelemetryMiddleware(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[metrics]),
        **options,
    )
    broker = SqliteBroker(str(tmp_path / "q.db")).with_middlewares(middleware)

    @broker.task("add")
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task("slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(30)

    @broker.task("bad")
    async def bad() -> None:
        raise ValueError("nope")

    @broker.task("wait")
    async def wait() -> None:
        await asyncio.sleep(30)

    return Traced(broker, middleware, spans, metrics, tracer_provider.get_tracer("test"))


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    made = _broker(tmp_path)
    yield made
    await made.broker.shutdown()


async def running(broker: Broker, task_id: str) -> None:
    deadline = time.monotonic() + 5
    while await broker.task_status(task_id) is not TaskStatus.RUNNING:
        assert time.monotonic() < deadline, "the task never started"
        await asyncio.sleep(0.01)


async def test_timeouts_cancels_dead_letters_and_unknown_tasks_show_on_the_run_spans(
    traced: Traced,
) -> None:
    broker = traced.broker
    async with conveyor.testing.worker(broker):
        slow, unknown = await broker.kiq_by_name("slow"), await broker.kiq_by_name("nope")
        waiting = await broker.kiq_by_name("wait")
        await running(broker, waiting.task_id)
        await broker.cancel(waiting.task_id)
        for handle in (slow, unknown, waiting):
            await handle.wait_result(timeout=5)
    (timed_out,) = traced.runs(slow.task_id)
    assert timed_out.status.status_code is StatusCode.ERROR
    assert (timed_out.attributes or {})["error.type"] == "TimeoutError"
    assert (timed_out.attributes or {})["conveyor.task.outcome"] == "failed"
    events = [event.name for event in timed_out.events]
    assert events == ["exception", "conveyor.task.timeout", "conveyor.task.dead_letter"]

    (cancelled,) = traced.runs(waiting.task_id)
    assert cancelled.status.status_code is StatusCode.UNSET  # asked for: not a failure
    assert (cancelled.attributes or {})["conveyor.task.outcome"] == "cancelled"
    assert "conveyor.task.cancelled" in [event.name for event in cancelled.events]

    (not_found,) = traced.runs(unknown.task_id)  # no pre_execute: its span starts at the end
    assert (not_found.attributes or {})["error.type"] == "TaskNotFound"
    assert "conveyor.task.dead_letter" in [event.name for event in not_found.events]


async def test_a_run_handed_back_at_shutdown_ends_its_span(traced: Traced) -> None:
    broker = traced.broker
    async with conveyor.testing.worker(broker, shutdown_timeout=0.05):
        handle = await broker.kiq_by_name("wait")
        await running(broker, handle.task_id)
    (run,) = traced.runs(handle.task_id)
    assert [event.name for event in run.events] == ["conveyor.task.released"]
    assert await broker.task_status(handle.task_id) is TaskStatus.QUEUED


async def test_a_scheduled_run_is_a_trace_of_its_own_linked_to_the_scheduler(
    traced: Traced,
) -> None:
    broker, scheduler = traced.broker, Scheduler(traced.broker)
    schedule_id = await scheduler.add(broker.find_task("add").s(1, 2), Once(time.time()))  # type: ignore[union-attr]  # registered above
    with traced.tracer.start_as_current_span("scheduler") as ticking:
        await scheduler.tick()
    (send,) = [s for s in traced.spans.get_finished_spans() if _kind(s) == "PRODUCER"]
    assert send.parent is None
    assert [link.context for link in send.links] == [ticking.get_span_context()]
    assert (send.attributes or {})["conveyor.schedule.id"] == schedule_id
    async with conveyor.testing.worker(broker):
        await broker.get_handle(str(_id(send))).wait_result(timeout=5)
    (run,) = traced.runs(str(_id(send)))
    assert run.parent is not None
    assert run.parent.span_id == send.context.span_id


async def test_a_send_that_fails_leaves_no_span_behind(traced: Traced) -> None:
    async def send_unencodable() -> None:
        with pytest.raises(TypeError):
            await traced.broker.kiq_by_name("add", object(), 1)

    await asyncio.create_task(send_unencodable())
    await asyncio.sleep(0)  # the loop lets go of the finished task
    gc.collect()
    assert traced.spans.get_finished_spans() == ()
    assert len(traced.middleware.tracing._sending) == 0  # the sending task's spans went with it


async def test_kiq_many_sends_one_span_per_message_under_the_current_span(traced: Traced) -> None:
    add = traced.broker.find_task("add")
    assert add is not None
    with traced.tracer.start_as_current_span("request") as request:
        handles = await traced.broker.kiq_many([add.s(i, i) for i in range(3)])
    sends = [s for s in traced.spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert sorted(str(_id(s)) for s in sends) == sorted(h.task_id for h in handles)
    assert {s.parent.span_id for s in sends if s.parent} == {request.get_span_context().span_id}


async def test_metrics_count_runs_as_the_prometheus_endpoint_does(tmp_path: Path) -> None:
    traced = _broker(tmp_path, cluster_metrics_seconds=0.05)
    broker = traced.broker
    try:
        async with conveyor.testing.worker(broker):
            handles = [await broker.kiq_by_name("add", i, i) for i in range(3)]
            handles += [await broker.kiq_by_name("bad"), await broker.kiq_by_name("nope")]
            for handle in handles:
                await handle.wait_result(timeout=5)
            points = await _points_when(traced, "conveyor.workers")
    finally:
        await broker.shutdown()
    assert points[("conveyor.tasks.received", "add")] == 3
    assert points[("conveyor.tasks.succeeded", "add")] == 3
    assert points[("conveyor.tasks.failed", "bad")] == 1
    assert points[("conveyor.tasks.failed", "<unknown>")] == 1
    duration = points[("conveyor.task.duration", "add")]
    assert isinstance(duration, HistogramDataPoint)
    assert duration.count == 3
    assert tuple(duration.explicit_bounds) == BUCKETS
    assert points[("conveyor.workers", None)] == 1
    assert points[("conveyor.queue.depth", "default:running")] >= 0


async def _points_when(traced: Traced, name: str) -> dict[tuple[str, str | None], Any]:
    """The metric points once `name` has one (the cluster's gauges come with the first read)."""
    deadline = time.monotonic() + 5
    while True:
        points = _points(traced.metrics)
        if any(key[0] == name for key in points) or time.monotonic() > deadline:
            return points
        await asyncio.sleep(0.02)


def _points(reader: InMemoryMetricReader) -> dict[tuple[str, str | None], Any]:
    data = reader.get_metrics_data()
    found: dict[tuple[str, str | None], Any] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    key = attributes.get("task_name")
                    if "queue" in attributes:
                        key = f"{attributes['queue']}:{attributes['state']}"
                    value = point.value if isinstance(point, NumberDataPoint) else point
                    found[(metric.name, None if key is None else str(key))] = value
    return found


async def test_without_an_sdk_nothing_is_recorded_and_a_context_is_passed_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    broker = SqliteBroker(str(tmp_path / "q.db")).with_middlewares(OpenTelemetryMiddleware())

    @broker.task("add")
    async def add(x: int, y: int) -> int:
        return x + y

    upstream = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    caplog.set_level(logging.INFO, "conveyor")
    async with conveyor.testing.worker(broker):
        alone = await add.kiq(1, 2)
        with trace.use_span(NonRecordingSpan(upstream)):
            carried = await add.kiq(3, 4)
        await alone.wait_result(timeout=5)
        await carried.wait_result(timeout=5)
    await broker.shutdown()
    ended = {r.task_id: r for r in caplog.records if r.getMessage().startswith("succeeded")}  # type: ignore[attr-defined]  # extra=
    assert not hasattr(ended[alone.task_id], "trace_id")
    assert ended[carried.task_id].trace_id == f"{0xABC:032x}"  # type: ignore[attr-defined]  # set by the factory
    assert ended[carried.task_id].span_id == f"{0xDEF:016x}"  # type: ignore[attr-defined]  # set by the factory
