"""Table bloat under sustained load on PostgreSQL (issue 18, item 5): do a million tasks through
the queue leave conveyor's tables and indexes near their idle size?

    bench/.venv/bin/python -m bench.pg_bloat [--count N] [--result-ttl S|none] [--settle S]

On a private `postgres` (`bench.servers`, never the system's 5432): one `conveyor worker`
process drains the queue while this process sends N no-op tasks with `broker.kiq_many` (B per
call), keeping at most M waiting (a steady flow, not a backlog: `bench.million` measures
backlogs). Every 2 s it samples, for each table of conveyor's schema, `pg_relation_size` (heap),
`pg_indexes_size`, `pg_total_relation_size`, live and dead rows and vacuum counts
(`pg_stat_user_tables`); then it keeps the worker running `--settle` seconds (autovacuum's
turn, and the worker's once-a-minute sweep of expired results) and samples again. The queue's
tables (`messages`, `dead_letters`) are reported apart from the results (`results`), which
grow by design until their TTL (24 h by default: `--result-ttl`) lets the sweep delete them.
Prints a table and writes `bench/results/pg_bloat[-ttl<S>].json`; a global time limit stops the
worker and the server by pid and still reports what was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import conveyor_source
from bench.million import worker_for
from bench.servers import PostgresServer, PostgresServerError
from bench.worker_proc import WorkerProcess

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
SCHEMA = "conveyor"
QUEUE_TABLES = ("messages", "dead_letters")
RESULT_TABLES = ("results",)
SAMPLE_SECONDS = 2.0
KB = 1024

_SIZES = """
SELECT c.relname AS name, pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS indexes,
    pg_total_relation_size(c.oid) AS total, s.n_live_tup AS live, s.n_dead_tup AS dead,
    s.autovacuum_count + s.vacuum_count AS vacuums
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname
"""
_INDEXES = """
SELECT indexrelname AS name, pg_relation_size(indexrelid) AS size
FROM pg_stat_user_indexes WHERE schemaname = $1 ORDER BY indexrelname
"""


@dataclass
class Sample:
    """One observation of every table of the schema, and of the flow."""

    t: float
    phase: str
    through: int
    waiting: int
    tables: dict[str, dict[str, int]]
    indexes: dict[str, int]

    def sum(self, names: tuple[str, ...], column: str) -> int:
        """`column` summed over the tables `names`."""
        return sum(int(self.tables.get(n, {}).get(column) or 0) for n in names)


@dataclass
class Run:
    """Everything measured, filled in as it goes (a stopped run still reports)."""

    settings: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    stopped: str | None = None


class Probe:
    """Reads the schema's sizes and the queue's length (an asyncpg pool: the sampler and the
    sender ask at the same time)."""

    def __init__(self, pool: Any, started: float) -> None:
        self.pool = pool
        self.started = started
        self.sent = 0

    async def waiting(self) -> int:
        """Messages in the queue (waiting or running)."""
        return int(await self.pool.fetchval(f'SELECT count(*) FROM "{SCHEMA}".messages'))

    async def sample(self, phase: str) -> Sample:
        """One observation now."""
        waiting = await self.waiting()
        tables = {r["name"]: dict(r) for r in await self.pool.fetch(_SIZES, SCHEMA)}
        for row in tables.values():
            row.pop("name")
        indexes = {r["name"]: r["size"] for r in await self.pool.fetch(_INDEXES, SCHEMA)}
        t = round(time.monotonic() - self.started, 1)
        return Sample(t, phase, self.sent - waiting, waiting, tables, indexes)


async def produce(run: Run, probe: Probe, app: Any) -> None:
    """Send `count` tasks, `batch` per call, keeping at most `max_waiting` in the queue."""
    count, batch, limit = (run.settings[k] for k in ("count", "batch", "max_waiting"))
    signature = app.noop.s()
    start, next_report = time.perf_counter(), time.perf_counter() + 15
    while probe.sent < count:
        if await probe.waiting() > limit - batch:
            await asyncio.sleep(0.02)
            continue
        n = min(batch, count - probe.sent)
        await app.broker.kiq_many([signature] * n)
        probe.sent += n
        if time.perf_counter() >= next_report:
            rate = probe.sent / (time.perf_counter() - start)
            print(f"  sent {probe.sent:,} ({rate:,.0f}/s)", flush=True)
            next_report += 15
    while await probe.waiting():  # noqa: ASYNC110 - the server is the only one to ask
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - start
    run.figures.update(flow_seconds=round(seconds, 1), flow_rate=round(count / seconds))


async def sample_every(run: Run, probe: Probe, phase: str, seconds: float) -> None:
    """Append a sample every `SAMPLE_SECONDS` until cancelled (or for `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(SAMPLE_SECONDS)
        run.samples.append(await probe.sample(phase))


async def measure(run: Run, url: str, worker: WorkerProcess) -> None:
    """The whole scenario; the worker is stopped before this returns."""
    import asyncpg

    app = importlib.import_module("bench.apps.million_app")  # reads the BENCH_* variables
    await app.broker.startup()  # creates the schema
    pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    probe = Probe(pool, time.monotonic())
    try:
        run.samples.append(await probe.sample("idle before"))
        await worker.start()
        print(f"sending {run.settings['count']:,} tasks through one worker")
        sampler = asyncio.create_task(sample_every(run, probe, "load", float("inf")))
        try:
            await produce(run, probe, app)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        run.samples.append(await probe.sample("drained"))
        print(f"all through; the worker stays {run.settings['settle']:.0f} s (autovacuum, sweep)")
        await sample_every(run, probe, "settle", run.settings["settle"])
        run.samples.append(await probe.sample("after settle"))
    finally:
        await worker.stop()
        await pool.close()
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


def _kb(value: int) -> str:
    return f"{value / KB:,.0f}"


def render(run: Run) -> str:
    """The table: queue tables and results, per phase (the load's largest sample too)."""
    if not run.samples:
        return f"nothing measured ({run.stopped})"
    load = [s for s in run.samples if s.phase == "load"]
    rows: list[tuple[str, Sample]] = [(run.samples[0].phase, run.samples[0])]
    if load:
        rows.append(("load, largest", max(load, key=lambda s: s.sum(QUEUE_TABLES, "total"))))
        rows.append(("load, last", load[-1]))
    rows += [(s.phase, s) for s in run.samples if s.phase in ("drained", "after settle")]
    header = (
        "phase", "t s", "through", "waiting", "queue KB", "msg heap", "msg idx", "msg dead",
        "dl KB", "results KB", "res rows", "res dead", "vacuums",
    )  # fmt: skip
    table = [header]
    for label, s in rows:
        msg, res = s.tables.get("messages", {}), s.tables.get("results", {})
        table.append((
            label, f"{s.t:.0f}", f"{s.through:,}", f"{s.waiting:,}",
            _kb(s.sum(QUEUE_TABLES, "total")), _kb(msg.get("heap") or 0),
            _kb(msg.get("indexes") or 0), f"{msg.get('dead') or 0:,}",
            _kb(s.sum(("dead_letters",), "total")), _kb(s.sum(RESULT_TABLES, "total")),
            f"{res.get('live') or 0:,}", f"{res.get('dead') or 0:,}",
            f"msg {msg.get('vacuums') or 0}, res {res.get('vacuums') or 0}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in table]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    ttl = run.settings["result_ttl"]
    last = run.samples[-1]
    notes = [
        f"{run.settings['count']:,} tasks, at most {run.settings['max_waiting']:,} waiting, "
        f"{run.figures.get('flow_rate', '?')} tasks/s through one worker; results kept "
        f"{'forever' if ttl is None else f'{ttl:g} s'}; sizes in KB (pg_total_relation_size; "
        "msg heap/idx: messages' pg_relation_size and pg_indexes_size).",
        "indexes at the end: "
        + ", ".join(f"{name} {_kb(size)} KB" for name, size in last.indexes.items()),
    ]
    if run.stopped:
        notes.append(f"STOPPED: {run.stopped}")
    return "\n".join([*lines, "", *notes])


def write_json(run: Run, path: Path) -> Path:
    """Every sample and setting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": run.settings,
        "meta": run.meta,
        "figures": run.figures,
        "stopped": run.stopped,
        "samples": [asdict(s) for s in run.samples],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pg_bloat", description="Table sizes under sustained load."
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="tasks (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=2_000, help="tasks per kiq_many call")
    parser.add_argument(
        "--max-waiting", type=int, default=20_000, help="most tasks in the queue at once"
    )
    parser.add_argument(
        "--result-ttl", default="none", help="seconds results are kept, or 'none': the broker's"
        " default (24 h)"
    )  # fmt: skip
    parser.add_argument("--settle", type=float, default=90.0, help="seconds after the flow")
    parser.add_argument("--concurrency", type=int, default=100, help="--max-async-tasks")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds (default 900)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    args = parser.parse_args(argv)
    if min(args.count, args.batch, args.concurrency) < 1 or args.max_waiting < args.batch:
        parser.error("--count, --batch and --concurrency must be above 0, --max-waiting >= --batch")
    ttl = args.result_ttl.lower()
    args.result_ttl = None if ttl == "none" else float(ttl)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the scenario, print the table and write the JSON."""
    args = parse_args(argv)
    keys = ("count", "batch", "max_waiting", "result_ttl", "settle", "concurrency", "time_limit")
    run = Run({k: getattr(args, k) for k in keys})
    run.meta.update(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        python=sys.version.split()[0],
        cpus=os.cpu_count(),
        conveyor_source=conveyor_source(),
        load_at_start=os.getloadavg(),
    )
    ttl = args.result_ttl
    worker = None
    try:
        with PostgresServer() as pg:
            run.meta.update(postgres=pg.version(), pid=pg.pid)
            print(f"postgres {pg.version()} on {pg.url()} (pid {pg.pid})")
            os.environ.update(BENCH_CONVEYOR_URL=pg.url(), BENCH_RESULT_TTL=str(ttl or 86400))
            worker = worker_for(run.settings, args.out / "logs", "pg_bloat")
            try:
                asyncio.run(run_limited(run, pg.url(), worker))
            finally:
                _kill_if_alive(worker)
    except PostgresServerError as exc:
        print(f"pg_bloat: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.stopped = "interrupted"
    run.meta["load_at_end"] = os.getloadavg()
    print()
    print(render(run))
    name = "pg_bloat.json" if ttl is None else f"pg_bloat-ttl{ttl:g}.json"
    print(f"JSON: {write_json(run, args.out / name)}")
    return 0 if run.stopped is None else 1


def _kill_if_alive(worker: WorkerProcess) -> None:
    """Last resort after the event loop is gone: SIGKILL the worker by pid if it still runs."""
    process = worker.process
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
