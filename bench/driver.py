"""One phase of one library session, run by the harness with the library's venv Python.

`python -m bench.driver --variant NAME --phase bulk|worker ...` prints one record per line,
`@@bench {json}`: `info`, `metric` (key, value), `na` and `error` (key, reason), `skip`, and
`timing` (wall time of a step, for finding where a session's time goes).
The `bulk` phase times the bulk API (scenario a) with no worker; the `worker` phase times
single sends (a), then starts one worker process that drains them (b), runs (c) and (d),
and reports (e), its peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.peers.base import Adapter, Unavailable
from bench.protocol import Counts
from bench.variants import VARIANTS, Variant
from bench.worker_proc import WorkerProcess

__all__ = ["PREFIX", "main"]

PREFIX = "@@bench "
ROOT = Path(__file__).resolve().parent.parent


def emit(kind: str, **fields: Any) -> None:
    """Print one record for the harness."""
    print(PREFIX + json.dumps({"kind": kind, **fields}), flush=True)


def load_adapter(variant: Variant, server_url: str, counts: Counts, workdir: Path) -> Adapter:
    """The adapter object of `variant`."""
    module = importlib.import_module(f"bench.peers.{variant.adapter}")
    adapter: Adapter = module.ADAPTER(server_url, variant.options, counts, workdir)
    return adapter


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Emit the wall time of a step, checks and waits included (a `timing` record)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        emit("timing", key=name, value=time.perf_counter() - start)


async def measure(key: str, work: Callable[[], Awaitable[float]]) -> bool:
    """Run one scenario and emit its figure or the reason it failed; True when it worked."""
    try:
        value = await work()
    except Exception as exc:
        emit("error", key=key, reason=_reason(exc))
        return False
    emit("metric", key=key, value=value)
    return True


def _reason(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def bulk_phase(adapter: Adapter, counts: Counts) -> None:
    """Scenario (a) through the bulk API, into queues no worker reads."""
    if adapter.bulk_api is None:
        emit("na", key="enqueue_bulk", reason="no bulk API")
        return
    await measure("enqueue_bulk", lambda: scenarios.enqueue_bulk(adapter, counts))


async def worker_phase(adapter: Adapter, counts: Counts, log_path: Path) -> None:
    """Single sends (a), then (b)-(e) with one worker process started by the library's command."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **adapter.env()}
    worker = WorkerProcess(adapter.worker_argv(bin_dir), env, ROOT, log_path)
    try:
        rate, handles = await scenarios.enqueue_single(adapter, counts)
    except Exception as exc:
        emit("error", key="enqueue_single", reason=_reason(exc))
        for key in ("drain", "sleep", "latency_p50", "latency_p99", "rss_peak"):
            emit("error", key=key, reason="not run: the single sends failed")
        return
    emit("metric", key="enqueue_single", value=rate)
    try:
        with step("drain"):
            await measure("drain", lambda: _drain(adapter, worker, handles, counts))
        if adapter.async_tasks:
            with step("sleep"):
                await measure("sleep", lambda: scenarios.sleep_burst(adapter, worker, counts))
        else:
            emit("na", key="sleep", reason="sync tasks (worker runs plain functions)")
        with step("latency"):
            await _latency(adapter, worker, counts)
    finally:
        with step("stop"):
            await worker.stop()
    if worker.peak_rss:
        emit("metric", key="rss_peak", value=worker.peak_rss_mb)
    else:
        emit("error", key="rss_peak", reason="the worker was never sampled")


async def _drain(
    adapter: Adapter, worker: WorkerProcess, handles: list[Any], counts: Counts
) -> float:
    seconds = await scenarios.drain(adapter, worker, handles, counts)
    emit("metric", key="drain_seconds", value=seconds)
    return len(handles) / seconds


async def _latency(adapter: Adapter, worker: WorkerProcess, counts: Counts) -> None:
    try:
        p50, p99, achieved = await scenarios.latency(adapter, worker, counts)
    except Exception as exc:
        emit("error", key="latency_p50", reason=_reason(exc))
        emit("error", key="latency_p99", reason=_reason(exc))
        return
    emit("metric", key="latency_p50", value=p50)
    emit("metric", key="latency_p99", value=p99)
    emit("metric", key="latency_send_rate", value=achieved)


async def run(args: argparse.Namespace) -> int:
    """Run the phase `args` name and emit its records."""
    variant = next(v for v in VARIANTS if v.name == args.variant)
    counts = Counts.from_json(args.counts)
    workdir = Path(args.workdir)
    adapter = load_adapter(variant, args.server_url, counts, workdir)
    adapter.reset()
    os.environ.update(adapter.env())
    try:
        await adapter.open()
    except Unavailable as exc:
        emit("skip", reason=str(exc))
        return 0
    emit(
        "info",
        version=adapter.version(),
        bulk_api=adapter.bulk_api,
        async_tasks=adapter.async_tasks,
        worker=adapter.worker_settings(),
        python=sys.version.split()[0],
    )
    try:
        if args.phase == "bulk":
            await bulk_phase(adapter, counts)
        else:
            await worker_phase(adapter, counts, Path(args.log))
    finally:
        with step("close"):
            await adapter.close()
            await adapter.close_counter()
            adapter.reset()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the harness's arguments and run the phase on uvloop when it is installed."""
    parser = argparse.ArgumentParser(prog="python -m bench.driver")
    parser.add_argument("--variant", required=True, choices=[v.name for v in VARIANTS])
    parser.add_argument("--phase", required=True, choices=["bulk", "worker"])
    parser.add_argument("--server-url", required=True, help="the Redis or PostgreSQL URL")
    parser.add_argument("--counts", required=True, help="JSON of bench.protocol.Counts")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--log", required=True, help="file for the worker's output")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
