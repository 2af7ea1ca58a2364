"""A FastAPI request span as the parent of the tasks it sends, sent to a collector over OTLP.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans and metrics go to that collector (this needs
`pip install opentelemetry-exporter-otlp-proto-http`). Run as a script without it, the same SDK
keeps the spans in memory: one request goes through the app in this process, and the script
prints the trace and checks its shape.
"""

from __future__ import annotations

import asyncio
import os

import httpx
from fastapi import FastAPI
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import conveyor.fastapi
from conveyor import SqliteBroker, chord
from conveyor.otel import OpenTelemetryMiddleware


# --8<-- [start:telemetry]
def setup_telemetry() -> None:
    """This process's SDK: spans and metrics to the collector at OTEL_EXPORTER_OTLP_ENDPOINT,
    as the service OTEL_SERVICE_NAME. Call it before the broker starts."""
    # pip install opentelemetry-exporter-otlp-proto-http (not a dependency of conveyor's)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found]
        OTLPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
        OTLPSpanExporter,
    )

    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


# --8<-- [end:telemetry]
KEPT = InMemorySpanExporter()
if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
    setup_telemetry()
else:  # the script's own check: the same SDK, its spans kept here
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(KEPT))
    trace.set_tracer_provider(provider)


# --8<-- [start:app]
broker = SqliteBroker("observability.db").with_middlewares(OpenTelemetryMiddleware())


@broker.task
async def word_count(text: str) -> int:
    return len(text.split())


@broker.task
async def total(counts: list[int]) -> int:
    return sum(counts)


# FastAPI makes each request's span itself once an SDK is configured (its `telemetry` option).
# The app runs the tasks too, unless APP_WORKER=0 leaves them to `conveyor worker` processes.
worker = os.environ.get("APP_WORKER", "1") != "0"
app = FastAPI(lifespan=conveyor.fastapi.lifespan(broker, worker=worker))


@app.post("/count")
async def count(texts: list[str]) -> dict[str, str]:
    """Count the words of every text in parallel, then add the counts up."""
    handle = await chord([word_count.s(text) for text in texts], total.s()).kiq()
    return {"task_id": handle.task_id}


# --8<-- [end:app]
def tree(spans: list[ReadableSpan], parent: int | None = None, depth: int = 0) -> list[str]:
    """The spans under `parent` as indented lines: name, kind and task id."""
    lines = []
    for span in spans:
        if (span.parent.span_id if span.parent else None) == parent and span.context:
            task_id = (span.attributes or {}).get("messaging.message.id", "")
            lines.append(f"{'    ' * depth + span.name:<36} {span.kind.name:<9} {task_id}")
            lines += tree(spans, span.context.span_id, depth + 1)
    return lines


async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        sent = await client.post("/count", json=["one two", "three four five"])
        result = await broker.get_handle(sent.json()["task_id"]).wait_result(timeout=10)
        assert result.return_value == 5
        await broker.wait_all(timeout=10)
    spans = sorted(KEPT.get_finished_spans(), key=lambda span: span.start_time or 0)
    print("\n".join(tree(spans)))
    assert len({span.context.trace_id for span in spans if span.context}) == 1  # one trace
    assert [span.name for span in spans if span.parent is None] == ["POST /count"]
    assert sum(span.name == "process default" for span in spans) == 3  # 2 members, 1 callback


if __name__ == "__main__":
    asyncio.run(main())
