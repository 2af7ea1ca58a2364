"""One worker draining queued no-ops, and its CPU per task: the A/B probe of bench/NOTES.md.

    bench/.venv/bin/python -m bench.drain_probe URL [--tasks 20000] [--rounds 3] [--src DIR ...]

Each round, for each `--src` in turn (a conveyor `src/` directory put first on the worker's
PYTHONPATH, so two commits alternate in one invocation; the installed conveyor when none is
given): enqueue the no-ops with `kiq_many`, start one `conveyor worker` process through the CLI
(100 tasks at once), and wait until `queue_stats()` shows nothing queued or running. It prints
the drain rate and the worker's CPU time per task (psutil, user + system), start-up included
in both. The URL is any engine's (`amqp://...?state=redis://...`, `redis://...`, ...); use a
prefix or database of your own, the probe purges its queue first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


async def _round(broker: Any, url: str, tasks: int, src: str | None) -> str:
    from bench.apps.conveyor_app import noop

    await broker.transport.purge("default")
    for start in range(0, tasks, 1000):
        await broker.kiq_many([noop.s() for _ in range(min(1000, tasks - start))])
    env = {**os.environ, "BENCH_CONVEYOR_URL": url}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, str(ROOT)) if p)
    argv = [sys.executable, "-m", "conveyor", "worker", "bench.apps.conveyor_app:broker",
            "--max-async-tasks", "100", "--log-level", "WARNING"]  # fmt: skip
    started = time.perf_counter()
    worker = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 600
        while await broker.transport.queue_stats():
            if time.monotonic() > deadline:
                return "not drained within 600 s"
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = psutil.Process(worker.pid).cpu_times()
    finally:
        worker.send_signal(signal.SIGINT)
        await asyncio.wait_for(worker.wait(), 60)
    per_task = (cpu.user + cpu.system) / tasks * 1e6
    return f"{tasks / wall:,.0f} tasks/s, worker CPU {per_task:.0f} us/task"


async def _rounds(url: str, tasks: int, rounds: int, srcs: list[str | None]) -> bool:
    from bench.apps.conveyor_app import broker

    failed = False
    async with broker:
        for n in range(1, rounds + 1):
            for src in srcs:
                line = await _round(broker, url, tasks, src)
                failed |= line.startswith("not")
                print(f"round {n} {src or 'installed'}: {line}", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    """Run the probe; 0 when every round drained."""
    parser = argparse.ArgumentParser(prog="python -m bench.drain_probe")
    parser.add_argument("url")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", action="append", default=[], help="a conveyor src/ to run")
    args = parser.parse_args(argv)
    os.environ["BENCH_CONVEYOR_URL"] = args.url
    sys.path.insert(0, str(ROOT))
    srcs: list[str | None] = list(args.src) or [None]
    return 1 if asyncio.run(_rounds(args.url, args.tasks, args.rounds, srcs)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
