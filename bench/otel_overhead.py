"""What tracing costs the drain: no middleware, `OpenTelemetryMiddleware` without an SDK, and with
the SDK and exporters that drop everything (issue 20).

    .venv/bin/python -m bench.otel_overhead [--engine sqlite|redis] [--count N] [--reps R]

Runs from the project's dev venv (the OpenTelemetry SDK is a dev dependency; `bench/.venv` does
not have it). Each measurement is a fresh process (a global tracer provider can be set once per
process): it sends `--count` no-op tasks with `kiq_many` (1,000 a call), then starts a worker in
the same process (`conveyor.testing.worker`, 100 tasks at once) and times how long the queue
takes to empty, in wall time (tasks a second) and in this process's CPU time per task (less
moved by what else the machine runs, as all the work is in this one process). The three
variants run one after another in each repetition, the order reversed every other one, so a
drift of the machine neither always helps nor always hurts one variant.

- `none`: no middleware;
- `api`: `OpenTelemetryMiddleware()`, only the OpenTelemetry API (no SDK configured);
- `sdk`: the same with the SDK set globally: a `TracerProvider` whose `BatchSpanProcessor` hands
  spans to an exporter that drops them, and a `MeterProvider` whose reader is never collected.

SQLite is a file in a temporary directory; Redis is `--redis-url` (database 15 of 127.0.0.1 by
default) under a key prefix of the run, whose keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

VARIANTS = ("none", "api", "sdk")
BATCH = 1000


def _configure_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


async def _measure(variant: str, url: str, count: int) -> dict[str, float]:
    import conveyor.testing
    from conveyor import broker_from_url
    from conveyor.otel import OpenTelemetryMiddleware

    if variant == "sdk":
        _configure_sdk()
    broker = broker_from_url(url)
    if variant != "none":
        broker.add_middlewares([OpenTelemetryMiddleware()])

    @broker.task("noop")
    async def noop(i: int) -> None:
        return None

    await broker.startup()
    try:
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            await broker.kiq_many([noop.s(i) for i in range(first, min(first + BATCH, count))])
        sent = time.perf_counter() - started
        async with conveyor.testing.worker(broker, max_async_tasks=100, receive_timeout=0.05):
            started, cpu = time.perf_counter(), time.process_time()
            await broker.wait_all(timeout=600)
            drained, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await broker.shutdown()
    return {"send": count / sent, "drain": count / drained, "cpu_us": cpu / count * 1e6}


def _child(variant: str, url: str, count: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.otel_overhead", "--child", variant, "--url", url,
         "--count", str(count)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed: {proc.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def _report(runs: dict[str, list[dict[str, float]]]) -> str:
    base = statistics.median(r["drain"] for r in runs["none"])
    base_cpu = statistics.median(r["cpu_us"] for r in runs["none"])
    lines = [
        "| variant | drain tasks/s: median (min-max) | vs none | drain CPU us/task: median "
        "(min-max) | vs none | send tasks/s: median |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        drains = [r["drain"] for r in runs[variant]]
        cpus = [r["cpu_us"] for r in runs[variant]]
        median, cpu = statistics.median(drains), statistics.median(cpus)
        sends = statistics.median(r["send"] for r in runs[variant])
        lines.append(
            f"| {variant} | {median:,.0f} ({min(drains):,.0f}-{max(drains):,.0f}) "
            f"| {median / base - 1:+.1%} | {cpu:.0f} ({min(cpus):.0f}-{max(cpus):.0f}) "
            f"| {cpu - base_cpu:+.0f} us | {sends:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every variant `--reps` times and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.child, args.url, args.count))))
        return
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench-otel-{uuid.uuid4().hex[:8]}"
        try:
            for rep in range(args.reps):
                order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    if args.engine == "redis":
                        url = f"{args.redis_url}?prefix={prefix}-{rep}-{variant}"
                    else:
                        url = f"sqlite:///{os.path.join(tmp, f'{rep}-{variant}.db')}"
                    runs[variant].append(_child(variant, url, args.count))
                    print(f"rep {rep + 1} {variant}: {runs[variant][-1]}", file=sys.stderr)
        finally:
            if args.engine == "redis":
                for rep in range(args.reps):
                    for variant in VARIANTS:
                        _drop_redis_prefix(args.redis_url, f"{prefix}-{rep}-{variant}")
    print(f"{args.engine}, {args.count} tasks, {args.reps} repetitions")
    print(_report(runs))


if __name__ == "__main__":
    main()
