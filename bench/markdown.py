"""The README's performance section, rendered from a run's `latest.json`.

    bench/.venv/bin/python -m bench.markdown [bench/results/latest.json]   # print it
    bench/.venv/bin/python -m bench.markdown --readme README.md            # replace it there

The section is whatever lies between the `<!-- bench:start -->` and `<!-- bench:end -->`
lines of the README; `--readme` rewrites only that. Every figure comes from the JSON as the run
printed it (`bench.report.judged_rows`): nothing is rounded or picked here, a missed target is
shown as missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.protocol import metric
from bench.report import GROUP_TITLES, floors, fmt, judged_rows

__all__ = ["END", "START", "main", "render"]

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"

#: What the peers of each group store, and which confirm publishes (bench/README.md has it all).
STORES = {
    "redis": "taskiq, Celery and Dramatiq store nothing by default (`-noresult` rows) and are "
    "also measured with a Redis result backend; arq, saq, streaq and Huey store results by "
    "default",
    "postgres": "Procrastinate and PgQueuer keep each job's final status row (no return value), "
    "saq's PostgresQueue the job row",
    "sqlite": "SqliteHuey stores results in its file (its default)",
    "amqp": "taskiq-aio-pika, Dramatiq and Celery store nothing by default (`-noresult` rows) "
    "and are also measured with a Redis result backend; conveyor keeps state and results in "
    "Redis. conveyor and taskiq-aio-pika wait for RabbitMQ's confirm of every publish, "
    "Dramatiq and Celery (their defaults) do not",
    "nats": "taskiq-nats stores nothing by default (`-noresult`) and is also measured with a "
    "Redis result backend; conveyor stores results in JetStream",
}


def _table(rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(rows[0]), "|" + "---|" * len(rows[0]), *(line(r) for r in rows[1:])]


def render(payload: dict[str, Any]) -> str:
    """The section's Markdown (without the start and end markers)."""
    meta, counts, summary = payload["meta"], payload["counts"], payload["summary"]
    started = meta.get("started", "?")[:10]
    source = meta.get("conveyor_source", "?")
    load_text = _load(meta.get("load_at_start"))
    reps = f"{payload['reps']} interleaved repetitions, {meta.get('seconds', '?')} s"
    if meta.get("interrupted"):  # the medians are over the repetitions that ran
        done = max((r.get("rep", 0) for r in payload["records"]), default=0)
        reps = f"{payload['reps']} interleaved repetitions asked, stopped after {done} had run"
    out = [
        f"Measured on {started}, conveyor {source}, by `bench/run {meta.get('argv', '')}`".rstrip()
        + f" ({meta.get('mode', '?')} counts, {reps}; load average {load_text} at the start, "
        f"{_load(meta.get('load_at_end'))} at the end; "
        f"{meta.get('machine', '?')}). Regenerate this section with "
        "`bench/.venv/bin/python -m bench.markdown --readme README.md` after a run.",
        "",
        "**Method** ([bench/README.md](bench/README.md) has every definition): each engine "
        "against the Python task queues on the same server, in the same invocation, one worker "
        f"process each (async ones with {counts['concurrency']} tasks at once). Figures are "
        f"medians over the repetitions: {counts['enqueue']:,} sequential awaited single sends "
        f"(no worker), the same through the bulk API, a drain of those {counts['drain']:,} "
        f"pre-enqueued no-ops (worker start-up included), {counts['sleep']:,} tasks each "
        "awaiting a 10 ms sleep, enqueue-to-start latency of "
        f"{counts['latency']:,} tasks sent at {counts['latency_rate']:g}/s, and the worker's "
        "peak RSS. conveyor always stores every result. A peer is shown twice where its "
        "library stores no result by default: **with its defaults** (`-noresult`: storing "
        "nothing) and **with results stored** (given the fastest result store it offers, "
        'Redis). How "done" is counted: for rows storing results, the result observed stored '
        "through the library's own API; for `-noresult` rows, a count each task makes at its "
        "end, which a thread of the worker adds to the harness's Redis every 2 ms (a counter, "
        "and each latency sample), and conveyor is then compared through its `-recorded` row, "
        "which stores its results and makes the same count, so both are counted the same way. "
        "**x** is how many times better conveyor is (above 1: better); **vs best peer** is the "
        "less favourable of the two comparisons, and the targets are judged on it.",
        "",
    ]
    for group in summary["best_peer"]:
        rows = judged_rows(summary, group)
        if not rows:
            continue
        out += [f"**{GROUP_TITLES[group]}** ({STORES[group]}):", "", *_table(rows), ""]
        bare = _bare(floors(meta)[group])
        if bare:
            out += [f"The same server with a bare client and no task queue (medians): {bare}.", ""]
    failures = _failures(summary)
    if failures:
        out += ["Failures in this run:", "", *failures, ""]
    out.append(
        "Only ratios within one run mean much: the machine has 2 CPUs shared with the servers "
        "and other work. Every raw figure, min-max and the other rows: `bench/results/latest.json` "
        "of the run; measurements and what moved them: [bench/NOTES.md](bench/NOTES.md)."
    )
    return "\n".join(out)


def _bare(figures: dict[str, float]) -> str:
    """The group's reference figures (`bench.report.floors`) as one clause."""
    parts = []
    if "latency_p50" in figures:
        parts.append(
            f"latency p50 / p99 {fmt(figures['latency_p50'], 'ms')} / "
            f"{fmt(figures['latency_p99'], 'ms')} ms"
        )
    if "enqueue_single" in figures:
        unit = metric("enqueue_single").unit
        rate = fmt(figures["enqueue_single"], unit)
        parts.append(f"one publish awaited until confirmed at a time {rate} {unit}")
    return "; ".join(parts)


def _load(load: Any) -> str:
    return f"{load[0]:.2f}" if isinstance(load, list) and load else "?"


def _failures(summary: dict[str, Any]) -> list[str]:
    """One line per variant and reason: the figures it cost (how many times), and why."""
    lines = []
    for name, row in summary["variants"].items():
        if row["skipped"]:
            lines.append(f"- {name} skipped: {row['skipped']}")
        by_reason: dict[str, list[str]] = {}
        for key, reasons in row["errors"].items():
            by_reason.setdefault(reasons[-1][:160], []).append(f"{key} ({len(reasons)}x)")
        for reason, keys in by_reason.items():
            lines.append(f"- {name}, {', '.join(keys)}: {reason}")
    return lines


def replace_section(readme: Path, section: str) -> None:
    """Put `section` between the README's markers."""
    text = readme.read_text()
    head, sep, rest = text.partition(START + "\n")
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{readme}: no {START} ... {END} lines")
    readme.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Print the section, or write it into a README (`--readme`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.markdown")
    parser.add_argument("json", nargs="?", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--readme", type=Path, help="replace the section in this file")
    args = parser.parse_args(argv)
    section = render(json.loads(args.json.read_text()))
    if args.readme is None:
        print(section)
    else:
        replace_section(args.readme, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
