"""A backlog of a million tasks: are Redis and the worker's memory bounded by it? (issue 4)

    bench/.venv/bin/python -m bench.million [--count N] [--batch B] [--result-ttl S]

On a private redis-server (never the system's 6379): enqueue N no-op tasks with
`broker.kiq_many` (B per call), measure Redis `used_memory` per waiting task, then start one
`conveyor worker` process and sample every 0.5 s, until the queue is empty, Redis memory, the
worker's RSS and the tasks left; then wait for the stored results to expire (their TTL) and
measure again. Prints a table and writes `bench/results/million.json`. A global time limit
stops everything (worker and redis-server, by pid) and still reports what was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis

from bench.harness import conveyor_source
from bench.million_report import MB, Run, Sample, render, summarize, write_json
from bench.servers import RedisServer, RedisServerError
from bench.worker_proc import WorkerProcess

__all__ = ["Probe", "main"]

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SAMPLE_SECONDS = 0.5


class Probe:
    """Reads Redis memory and key counts, the queue's backlog and the worker's RSS."""

    def __init__(self, url: str, broker: Any, started: float) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self.broker = broker
        self.started = started
        self.worker: psutil.Process | None = None
        self.queue_keys: list[str] = []

    async def sample(self, phase: str) -> Sample:
        """One observation now."""
        memory = await self.redis.info("memory")
        keyspace = await self.redis.info("keyspace")
        stats = await self.broker.transport.queue_stats()
        db0 = keyspace.get("db0", {})
        queue = [await self.redis.memory_usage(key) for key in self.queue_keys]
        return Sample(
            t=round(time.monotonic() - self.started, 2),
            phase=phase,
            used_memory=int(memory["used_memory"]),
            used_memory_rss=int(memory["used_memory_rss"]),
            left=sum(s.ready + s.scheduled + s.running for s in stats),
            keys=int(db0.get("keys", 0)),
            expiring=int(db0.get("expires", 0)),
            queue_bytes=sum(int(size or 0) for size in queue),
            worker_rss=tree_rss(self.worker),
        )

    async def key_memory(self, limit: int | None = None) -> dict[str, int]:
        """Bytes of each key (`MEMORY USAGE ... SAMPLES 0`: exact, walks every element).

        Empty when there are more than `limit` keys.
        """
        if limit is not None and await self.redis.dbsize() > limit:
            return {}
        sizes = {}
        async for key in self.redis.scan_iter(count=1000):
            size = await self.redis.memory_usage(key, samples=0)
            sizes[key.decode()] = int(size or 0)
        return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))

    async def one_result(self) -> dict[str, Any]:
        """One stored result: its key, value size and `MEMORY USAGE` (empty if none is left)."""
        async for key in self.redis.scan_iter(match="*:r:*", count=1000):
            return {
                "key": key.decode(),
                "value_bytes": await self.redis.strlen(key),
                "memory_usage": await self.redis.memory_usage(key, samples=0),
            }
        return {}

    async def close(self) -> None:
        """Close the Redis connection."""
        await self.redis.aclose()


def tree_rss(proc: psutil.Process | None) -> int:
    """RSS of a process and all its descendants, in bytes (0 when it is gone)."""
    if proc is None:
        return 0
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


async def enqueue(run: Run, app: Any, count: int, batch: int) -> None:
    """Send `count` no-op tasks, `batch` per `kiq_many` call; no worker is running."""
    signature = app.noop.s()
    sent, start, next_report = 0, time.perf_counter(), count // 5
    while sent < count:
        n = min(batch, count - sent)
        await app.broker.kiq_many([signature] * n)
        sent += n
        if sent >= next_report and sent < count:
            print(f"  enqueued {sent:,} ({sent / (time.perf_counter() - start):,.0f}/s)")
            next_report += count // 5
    seconds = time.perf_counter() - start
    run.figures.update(enqueue_seconds=round(seconds, 2), enqueue_rate=round(count / seconds))


async def drain(run: Run, probe: Probe, worker: WorkerProcess, count: int) -> None:
    """Start the worker and sample every 0.5 s until no task is left."""
    start = time.perf_counter()
    await worker.start()
    assert worker.process is not None
    probe.worker = psutil.Process(worker.process.pid)
    next_report = time.perf_counter() + 15.0
    while True:
        await asyncio.sleep(SAMPLE_SECONDS)
        worker.check()
        sample = await probe.sample("drain")
        run.samples.append(sample)
        if sample.left == 0:
            break
        if time.perf_counter() >= next_report:
            done = count - sample.left
            print(f"  drained {done:,}, {sample.left:,} left, redis {sample.used_memory / MB:.0f}"
                  f" MB, worker {sample.worker_rss / MB:.0f} MB")  # fmt: skip
            next_report += 15.0
    seconds = time.perf_counter() - start
    run.figures.update(drain_seconds=round(seconds, 2), drain_rate=round(count / seconds))


async def wait_expiry(run: Run, probe: Probe, ttl: float) -> None:
    """Sample until the results have expired: TTL passed and the key count steady for 2 s.

    Other keys have TTLs too (the worker's statistics), so "no key with a TTL" never comes;
    the wait ends at TTL + 30 s at the latest.
    """
    start = time.monotonic()
    steady = 0
    while time.monotonic() - start < ttl + 30.0:
        await asyncio.sleep(SAMPLE_SECONDS)
        sample = await probe.sample("expiry")
        steady = steady + 1 if sample.keys == run.samples[-1].keys else 0
        run.samples.append(sample)
        if time.monotonic() - start >= ttl and steady >= 4:
            return
    run.figures["expiry_incomplete"] = True


async def measure(run: Run, url: str, worker: WorkerProcess) -> None:
    """The whole scenario on Redis `url`; the worker is stopped before this returns."""
    settings = run.settings
    app = importlib.import_module("bench.apps.million_app")  # reads the BENCH_* variables
    await app.broker.startup()
    probe = Probe(url, app.broker, time.monotonic())
    try:
        run.samples.append(await probe.sample("start"))
        print(f"enqueueing {settings['count']:,} tasks, {settings['batch']:,} per kiq_many call")
        await enqueue(run, app, settings["count"], settings["batch"])
        run.keys_after_enqueue = await probe.key_memory()
        probe.queue_keys = [key for key in run.keys_after_enqueue if ":{" in key]
        run.samples.append(await probe.sample("enqueued"))
        print(f"starting one worker: {' '.join(worker.argv[1:])}")
        try:
            await drain(run, probe, worker, settings["count"])
            run.samples.append(await probe.sample("drained"))
            run.one_result = await probe.one_result()
        finally:
            await worker.stop()
            run.figures["worker_peak_rss"] = worker.peak_rss
        if settings["result_ttl"] is not None:
            print(f"waiting up to {settings['result_ttl'] + 30:.0f} s for the results to expire")
            await wait_expiry(run, probe, settings["result_ttl"])
        run.keys_at_end = await probe.key_memory(limit=1000)
    finally:
        await probe.close()
        await app.broker.shutdown()


async def run_limited(run: Run, url: str, worker: WorkerProcess) -> None:
    """`measure` under the global time limit; SIGTERM cancels it like Ctrl-C does."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with asyncio.timeout(run.settings["time_limit"]):
            await measure(run, url, worker)
    except TimeoutError:
        run.stopped = f"stopped by the {run.settings['time_limit']:.0f} s time limit"
    except Exception as exc:  # a dead worker, a lost connection: report what was measured
        run.stopped = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


def worker_for(settings: dict[str, Any], logs: Path, name: str = "million") -> WorkerProcess:
    """One `conveyor worker` process on the million app, with this process's environment; its
    output goes to `<logs>/<name>.worker.log`."""
    argv = [
        str(Path(sys.executable).parent / "conveyor"), "worker", "bench.apps.million_app:broker",
        "--workers", "1", "--max-async-tasks", str(settings["concurrency"]),
        "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), _pythonpath()]))}
    return WorkerProcess(argv, env, ROOT, logs / f"{name}.worker.log")


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.million", description="A 1M-task backlog on a private Redis."
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="tasks (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=5_000, help="tasks per kiq_many call")
    parser.add_argument(
        "--result-ttl", default="60", help="seconds results are kept, or 'none' (default 60)"
    )
    parser.add_argument("--concurrency", type=int, default=100, help="--max-async-tasks")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    args = parser.parse_args(argv)
    if min(args.count, args.batch, args.concurrency) < 1 or args.time_limit <= 0:
        parser.error("--count, --batch, --concurrency and --time-limit must be above 0")
    ttl = args.result_ttl.lower()
    args.result_ttl = None if ttl == "none" else float(ttl)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the scenario, print the table and write million.json."""
    args = parse_args(argv)
    settings = {k: getattr(args, k) for k in ("count", "batch", "result_ttl", "concurrency")}
    run = Run({**settings, "time_limit": args.time_limit})
    run.meta.update(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        python=sys.version.split()[0],
        cpus=os.cpu_count(),
        conveyor_source=conveyor_source(),
        load_at_start=os.getloadavg(),
    )
    worker = None
    try:
        with RedisServer() as server:
            run.meta.update(redis_version=server.version(), redis_pid=server.pid)
            print(f"redis-server {server.version()} on {server.url(0)} (pid {server.pid})")
            ttl = run.settings["result_ttl"]
            os.environ.update(BENCH_CONVEYOR_URL=server.url(0), BENCH_RESULT_TTL=str(ttl))
            worker = worker_for(run.settings, args.out / "logs")
            try:
                asyncio.run(run_limited(run, server.url(0), worker))
            finally:
                _kill_if_alive(worker)
    except RedisServerError as exc:
        print(f"million: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.stopped = "interrupted"
    run.meta["load_at_end"] = os.getloadavg()
    summarize(run)
    print()
    print(render(run))
    print(f"JSON: {write_json(run, args.out / 'million.json')}")
    return 0 if run.stopped is None else 1


def _kill_if_alive(worker: WorkerProcess) -> None:
    """Last resort after the event loop is gone: SIGKILL the worker by pid if it still runs."""
    process = worker.process
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
