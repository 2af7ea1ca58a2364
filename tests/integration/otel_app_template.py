"""The tasks of the tracing tests (`test_otel_processes.py`), with `OpenTelemetryMiddleware`.

Copied into the test's `tmp_path` under a unique module name: the test imports it as the
producer, `conveyor worker` processes load it. In a worker (`CONVEYOR_TEST_SPANS` names a
directory) the global tracer provider of the OpenTelemetry SDK writes each finished span as one
JSON line to `<dir>/<pid>.jsonl`, as an exporter to a collector would send it; in the test's
process the module's own `provider` is used, to which the test adds an `InMemorySpanExporter`.
`CONVEYOR_TEST_OTEL_LINK=1` makes the workers' middleware `link=True`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from conveyor import Context, Depends, broker_from_url
from conveyor.otel import OpenTelemetryMiddleware

SPANS = os.environ.get("CONVEYOR_TEST_SPANS")


def record(span: ReadableSpan) -> dict[str, Any]:
    """What the tests look at in a span, as plain values (hex ids)."""
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if parent is None else f"{parent.span_id:016x}",
        "links": [
            f"{link.context.trace_id:032x}:{link.context.span_id:016x}" for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "status": span.status.status_code.name,
    }


class JsonLines(SpanExporter):
    """Appends each span as a JSON line to a file (one small O_APPEND write per span)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(record(span), default=str) + "\n" for span in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


provider = TracerProvider()
if SPANS:  # a worker process: the SDK as an application would set it up
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLines(Path(SPANS) / f"{os.getpid()}.jsonl"))
    )
    trace.set_tracer_provider(provider)
LINK = os.environ.get("CONVEYOR_TEST_OTEL_LINK") == "1"

broker = broker_from_url().with_middlewares(
    OpenTelemetryMiddleware(link=LINK, tracer_provider=None if SPANS else provider)
)


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task
async def total(values: list[int]) -> int:
    return sum(values)


@broker.task(retries=3, retry_delay=0)
async def flaky(context: Context = Depends()) -> int:
    """Fails its first two attempts."""
    if context.attempt < 3:
        raise ValueError(f"attempt {context.attempt} fails")
    return context.attempt
