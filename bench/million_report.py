"""The report of `bench.million`: its samples, the figures derived from them, the table, JSON."""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MB", "Run", "Sample", "render", "summarize", "write_json"]

MB = 1024 * 1024
#: Fractions of the backlog drained at which the table shows a row.
MILESTONES = (0.25, 0.5, 0.75)


@dataclass
class Sample:
    """One observation: Redis memory, the backlog, live results and the worker's RSS.

    `queue_bytes` is `MEMORY USAGE` (5 samples: an estimate) of the queue's streams and
    task-id hash, the keys that hold the waiting tasks.
    """

    t: float
    phase: str
    used_memory: int
    used_memory_rss: int
    left: int
    keys: int
    expiring: int
    queue_bytes: int = 0
    worker_rss: int = 0


@dataclass
class Run:
    """Everything measured, filled in as the run goes (so a stopped run still reports)."""

    settings: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    keys_after_enqueue: dict[str, int] = field(default_factory=dict)
    keys_at_end: dict[str, int] = field(default_factory=dict)
    one_result: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    stopped: str | None = None


def _mb(value: int) -> str:
    return f"{value / MB:,.1f}"


def summarize(run: Run) -> None:
    """Derive the per-task figures from the samples (into `run.figures`)."""
    by_phase = {s.phase: s for s in run.samples}  # the last sample of each phase
    count, figures = run.settings["count"], run.figures
    start, enqueued = by_phase.get("start"), by_phase.get("enqueued")
    if start and enqueued:
        figures["waiting_bytes_per_task"] = round(
            (enqueued.used_memory - start.used_memory) / count
        )
    drain = [s for s in run.samples if s.phase == "drain"]
    if drain:
        figures["redis_peak_during_drain"] = max(s.used_memory for s in drain)
        figures["keys_peak_during_drain"] = max(s.keys for s in drain)
        warm = next((s for s in drain if count - s.left >= count * 0.01), drain[0])
        figures["worker_rss_at_1pct"] = warm.worker_rss
        figures["worker_rss_at_end"] = drain[-1].worker_rss
    drained, expired = by_phase.get("drained"), by_phase.get("expiry")
    floor = expired or start  # results gone (or not yet written): the memory without them
    if drained and floor and drained.keys > floor.keys:
        per_key = (drained.used_memory - floor.used_memory) / (drained.keys - floor.keys)
        figures["bytes_per_result"] = round(per_key)
    if run.settings["result_ttl"] is not None and drain:
        figures["results_past_ttl_peak"] = results_past_ttl(run)


def results_past_ttl(run: Run) -> int:
    """The most keys seen beyond the results written in the last TTL seconds.

    Those results have expired but are still in memory: Redis removes expired keys when they
    are read or when its periodic expiry cycle samples them, which can fall behind the writes.
    """
    ttl, count = run.settings["result_ttl"], run.settings["count"]
    timeline = [s for s in run.samples if s.phase in ("drain", "drained", "expiry")]
    times = [s.t for s in timeline]
    peak = 0
    for s in timeline:
        before = bisect.bisect_right(times, s.t - ttl) - 1  # the last sample a TTL ago
        finished_then = count - timeline[before].left if before >= 0 else 0
        peak = max(peak, s.keys - (count - s.left - finished_then))
    return peak


def table_rows(run: Run) -> list[tuple[str, Sample]]:
    """The rows of the table: phases and the drain's milestones, in order."""
    count, rows = run.settings["count"], []
    milestones = list(MILESTONES)
    for s in run.samples:
        if s.phase == "drain":
            reached = [m for m in milestones if count - s.left >= count * m]
            if reached:  # one row per sample, named after the furthest milestone it passed
                rows.append((f"drained {reached[-1]:.0%}", s))
                milestones = milestones[len(reached) :]
        elif s.phase != "expiry":
            label = {"start": "start (empty)", "enqueued": "after enqueue"}
            rows.append((label.get(s.phase, "after drain"), s))
    expiry = [s for s in run.samples if s.phase == "expiry"]
    if expiry:
        rows.append((f"results expired (+{expiry[-1].t - rows[-1][1].t:.0f} s)", expiry[-1]))
    return rows


def render(run: Run) -> str:
    """The report: settings, rates, the memory table and the per-task figures."""
    s, f = run.settings, run.figures
    ttl = "none" if s["result_ttl"] is None else f"{s['result_ttl']:g} s"
    lines = [
        f"million: {s['count']:,} no-op tasks, {s['batch']:,} per kiq_many, result TTL {ttl}, "
        f"1 worker process (--max-async-tasks {s['concurrency']})",
        f"redis-server {run.meta['redis_version']}, conveyor {run.meta['conveyor_source']}, "
        f"load average {run.meta['load_at_start'][0]:.2f} at start, "
        f"{run.meta.get('load_at_end', [0.0])[0]:.2f} at end",
    ]
    if "enqueue_rate" in f:
        lines.append(f"enqueue: {f['enqueue_seconds']:.1f} s, {f['enqueue_rate']:,} tasks/s")
    if "drain_rate" in f:
        lines.append(f"drain:   {f['drain_seconds']:.1f} s (worker start included), "
                     f"{f['drain_rate']:,} tasks/s")  # fmt: skip
    lines += ["", *_table_lines(run), "", *_per_task_lines(f)]
    if run.stopped:
        lines.append(f"incomplete: {run.stopped}")
    return "\n".join(lines)


#: The table's columns: title, unit, width.
COLUMNS = (
    ("redis used", "MB", 12),
    ("queue keys", "MB", 12),
    ("redis RSS", "MB", 12),
    ("tasks left", "", 12),
    ("keys", "", 10),
    ("worker RSS", "MB", 12),
)


def _table_lines(run: Run) -> list[str]:
    rows = [["", *(str(column[i]) for column in COLUMNS)] for i in (0, 1)]
    for label, x in table_rows(run):
        rows.append(
            [
                label,
                _mb(x.used_memory),
                _mb(x.queue_bytes) if x.phase != "start" else "-",
                _mb(x.used_memory_rss),
                f"{x.left:,}",
                f"{x.keys:,}",
                _mb(x.worker_rss) if x.worker_rss else "-",
            ]
        )
    f = run.figures
    if "redis_peak_during_drain" in f:
        peak, keys = _mb(f["redis_peak_during_drain"]), f"{f['keys_peak_during_drain']:,}"
        rows.append(["peak during drain", peak, "", "", "", keys, _mb(f["worker_peak_rss"])])
    widths = [28, *(width for _, _, width in COLUMNS)]
    lines = [
        f"{row[0]:<28}" + "".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]
    lines.insert(2, "-" * sum(widths))
    return lines


def _per_task_lines(f: dict[str, Any]) -> list[str]:
    lines = []
    if "waiting_bytes_per_task" in f:
        lines.append(f"Redis per waiting task: {f['waiting_bytes_per_task']:,} B")
    if "bytes_per_result" in f:
        lines.append(f"Redis per stored result: {f['bytes_per_result']:,} B")
    if "results_past_ttl_peak" in f:
        lines.append(
            f"keys kept past the result TTL (expired, not yet removed by Redis): "
            f"up to {f['results_past_ttl_peak']:,}"
        )
    if "worker_rss_at_1pct" in f:
        lines.append(
            f"worker RSS: {_mb(f['worker_rss_at_1pct'])} MB at 1% drained, "
            f"{_mb(f['worker_rss_at_end'])} MB at the end, peak {_mb(f['worker_peak_rss'])} MB"
        )
    if f.get("expiry_incomplete"):
        lines.append("the key count was still changing at TTL + 30 s")
    return lines


def write_json(run: Run, path: Path) -> Path:
    """Write settings, figures, the key sizes after enqueue and every sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**asdict(run), "samples": [asdict(s) for s in run.samples]}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
