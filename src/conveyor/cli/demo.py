"""`conveyor demo`: a worker process on a temporary SQLite file, example tasks, live progress,
results and timings, then a clean stop. No server anywhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["run_demo"]

console = Console(stderr=False)


def run_demo(count: int, keep: bool) -> int:
    """Run the demo; return the exit code."""
    workdir = tempfile.mkdtemp(prefix="conveyor-demo-")
    url = f"sqlite:///{os.path.join(workdir, 'demo.db')}"
    os.environ["CONVEYOR_BROKER_URL"] = url
    console.print(f"[bold]conveyor demo[/] on the embedded default: {url}")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            "conveyor.demo_tasks:broker",
            "--workers",
            "2",
            "--log-level",
            "WARNING",
        ],
        env={**os.environ, "CONVEYOR_BROKER_URL": url},
    )
    console.print(f"started a worker supervisor (pid {worker.pid}) with 2 worker processes")
    try:
        return asyncio.run(_main(count))
    finally:
        _stop(worker)
        if keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    started = time.perf_counter()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        code = worker.wait()
    took = time.perf_counter() - started
    console.print(f"worker stopped with code {code} after SIGTERM in {took:.2f} s")


async def _main(count: int) -> int:
    from conveyor import demo_tasks as t

    broker = t.broker
    async with broker:
        start = time.perf_counter()
        examples: list[tuple[str, Any]] = [
            ("async  add(2, 3)", await t.add.kiq(2, 3)),
            ("sync   resize('cat.png', 640)", await t.resize.kiq("cat.png", 640)),
            ("retry  flaky('orders')", await t.flaky.kiq("orders")),
            ("delay  remind(...) in 1 s", await t.remind.kicker().with_delay(1.0).kiq("stand up")),
            ("progress crunch(20)", await t.crunch.kiq(20)),
        ]
        sent = time.perf_counter()
        batch = await broker.kiq_many([t.noop.s(i) for i in range(count)])
        enqueued = time.perf_counter() - sent
        await _show_progress(broker, examples[-1][1], len(batch) + len(examples))
        drained = time.perf_counter() - sent
        table = Table(title="example tasks")
        for column in ("task", "status", "result", "attempts", "ran for"):
            table.add_column(column)
        failures = 0
        for label, handle in examples:
            result = await handle.wait_result(timeout=30)
            failures += result.is_err
            shown = result.error_message if result.is_err else repr(result.return_value)
            table.add_row(
                label,
                str(result.status),
                shown,
                str(result.attempts),
                f"{result.execution_time * 1000:.1f} ms",
            )
        console.print(table)
        results = [await h.wait_result(timeout=30) for h in batch]
        failures += sum(r.is_err for r in results)
        ok = sum(r.return_value == i for i, r in enumerate(results))
        console.print(
            f"{count} no-op tasks: enqueued in {enqueued * 1000:.0f} ms "
            f"({count / enqueued:,.0f}/s), all results in {drained:.2f} s; {ok}/{count} correct"
        )
        console.print(f"total {time.perf_counter() - start:.2f} s, {failures} failure(s)")
    return 1 if failures or ok != count else 0


async def _show_progress(broker: Any, crunch: Any, total: int) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks_bar = progress.add_task("tasks done", total=total)
        crunch_bar = progress.add_task("crunch progress", total=20)
        while True:
            stats = await broker.transport.queue_stats()
            pending = sum(q.ready + q.scheduled + q.running for q in stats)
            progress.update(tasks_bar, completed=total - pending)
            report = await crunch.get_progress()
            if report:
                progress.update(crunch_bar, completed=report["done"])
            if pending == 0:
                progress.update(crunch_bar, completed=20)
                return
            await asyncio.sleep(0.1)
