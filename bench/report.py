"""Medians, ratios to the best peer, the printed table, latest.json and chart.png."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import broker_reference, pg_reference, reference
from bench.protocol import METRICS, TARGETS, Counts, Metric, metric
from bench.variants import VARIANTS

if TYPE_CHECKING:
    from bench.harness import Run
    from bench.variants import Variant

__all__ = [
    "draw_chart",
    "error_lines",
    "floors",
    "judged_rows",
    "render",
    "session_line",
    "summarize",
    "write_json",
]

EXTRA = ("drain_seconds", "latency_send_rate")  # kept in JSON, not in the table
SHORT = {
    "enqueue_single": "enq",
    "enqueue_bulk": "bulk",
    "drain": "drain",
    "sleep": "sleep",
    "latency_p50": "p50",
    "latency_p99": "p99",
    "rss_peak": "rss",
}


def fmt(value: float, unit: str) -> str:
    """A figure in a few characters: 12.3k tasks/s, 0.41 s, 2.6 ms, 35 MB."""
    if unit == "tasks/s":
        if value >= 10_000:
            return f"{value / 1000:.0f}k"
        return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
    if unit == "ms":
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    if unit == "MB":
        return f"{value:.0f}"
    return f"{value:.2f}"


def session_line(records: Iterable[dict[str, Any]]) -> str:
    """One library session's figures on one line, for progress output."""
    values = {r["key"]: r["value"] for r in records if r["kind"] == "metric"}
    parts = []
    for m in METRICS:
        if m.key in values:
            unit = {"tasks/s": "/s", "MB": "MB", "ms": "ms", "s": "s"}[m.unit]
            parts.append(f"{SHORT[m.key]} {fmt(values[m.key], m.unit)}{unit}")
    return " ".join(parts) or "no figures"


def summarize(
    records: Sequence[dict[str, Any]], variants: Sequence[Variant], skipped: dict[str, str]
) -> dict[str, Any]:
    """Per variant: info, medians/min/max of every metric, n/a and errors; then the ratios."""
    table: dict[str, Any] = {}
    for v in variants:
        mine = [r for r in records if r.get("variant") == v.name]
        info = next((r for r in mine if r["kind"] == "info"), {})
        metrics = {}
        for key in [m.key for m in METRICS] + list(EXTRA):
            values = [float(r["value"]) for r in mine if r["kind"] == "metric" and r["key"] == key]
            if values:
                metrics[key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
        errors: dict[str, list[str]] = {}
        for r in mine:
            if r["kind"] == "error":
                errors.setdefault(r["key"], []).append(r["reason"])
        table[v.name] = {
            "library": v.adapter,
            "group": v.group,
            "conveyor": v.conveyor,
            "options": v.options,
            "client_of": v.client_of,
            "recorded": v.recorded,
            "default": v.default,
            "stores_results": v.stores_results,
            "venv": f"bench/{v.venv}",
            "info": {k: info.get(k) for k in ("version", "bulk_api", "async_tasks", "worker")},
            "skipped": skipped.get(v.name),
            "metrics": metrics,
            "na": {r["key"]: r["reason"] for r in mine if r["kind"] == "na"},
            "errors": errors,
            "shared": {r["key"]: r["from"] for r in mine if r["kind"] == "shared"},
        }
    for row in table.values():  # figures of the client twin (see Variant.client_of)
        for key, twin in row["shared"].items():
            if twin in table and key in table[twin]["metrics"]:
                row["metrics"][key] = {**table[twin]["metrics"][key], "shared_from": twin}
    groups = dict.fromkeys(row["group"] for row in table.values())
    best: dict[str, Any] = {}
    for g in groups:
        of_group = {n: r for n, r in table.items() if r["group"] == g}
        best[g] = {kind: best_peers(of_group, PEER_SETS[kind]) for kind in PEER_SETS}
    found = ratios(table, best)
    compared = {g: comparison(table, best[g], g) for g in groups}
    return {
        "variants": table,
        "best_peer": best,
        "ratios": found,
        "comparisons": compared,
        "targets": targets(table, compared),
    }


#: The peers each comparison picks its best from: "results", those whose completion is
#: observed as a stored result (every peer storing results, by default or given a store);
#: "recorded", those counted by the recorder (storing nothing: their library's default);
#: "defaults", every peer as its library ships as to results (either way of counting).
PEER_SETS = {
    "results": lambda row: not row["recorded"],
    "recorded": lambda row: row["recorded"],
    "defaults": lambda row: row["default"],
}


def best_peers(table: dict[str, Any], keep: Any = None) -> dict[str, dict[str, Any]]:
    """For each metric, the non-conveyor variant of `table` (that `keep(row)` accepts) with the
    best median in this run (`table` holds one group: conveyor rows are compared with the peers
    on the same server)."""
    best: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        found = [
            (row["metrics"][m.key]["median"], name)
            for name, row in table.items()
            if not row["conveyor"]
            and (keep is None or keep(row))
            and m.key in row["metrics"]
            and "shared_from" not in row["metrics"][m.key]
        ]
        if found:
            value, name = max(found) if m.higher_is_better else min(found)
            best[m.key] = {"variant": name, "value": value}
    return best


def ratios(table: dict[str, Any], by_group: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """conveyor's median / the best peer's median of its group, per conveyor variant and metric,
    like for like: a row observed through stored results against the peers observed so, a
    `-recorded` row against the peers the recorder counts."""
    out: dict[str, Any] = {}
    for name, row in table.items():
        if not row["conveyor"]:
            continue
        out[name] = {}
        best = by_group.get(row["group"], {}).get("recorded" if row["recorded"] else "results", {})
        for m in METRICS:
            if m.key not in row["metrics"] or m.key not in best or not best[m.key]["value"]:
                continue
            value = row["metrics"][m.key]["median"]
            ratio = value / best[m.key]["value"]
            out[name][m.key] = {
                "ratio": ratio,
                "value": value,
                "best_peer": best[m.key]["variant"],
                "best_value": best[m.key]["value"],
                "better": ratio >= 1 if m.higher_is_better else ratio <= 1,
            }
    return out


def times(value: float, peer: float, m: Metric) -> float:
    """How many times better conveyor's `value` is than `peer` (above 1: conveyor better)."""
    if m.higher_is_better:
        return value / peer if peer else float("inf")
    return peer / value if value else float("inf")


#: Figures of the client alone: the way completions are counted does not touch them.
CLIENT_KEYS = ("enqueue_single", "enqueue_bulk")


def comparison(table: dict[str, Any], best: dict[str, Any], group: str) -> dict[str, Any]:
    """The group's conveyor row (one worker process, results stored) against its best peer,
    per metric, twice: against the best peer storing results (both observed through stored
    results), and against the best peer with its library's defaults; for a default that stores
    nothing, conveyor's `-recorded` row (results stored, counted by the recorder as that peer
    is) stands in, but for the enqueue figures, which no counting touches. `judged` is the
    comparison less favourable to conveyor: the one the targets are judged on."""
    base = f"conveyor-{group}"
    row = table.get(base)
    if row is None or row["skipped"]:
        return {}
    twin = next(
        (
            n
            for n, r in table.items()
            if r["conveyor"] and r["recorded"] and r["client_of"] == base and not r["skipped"]
        ),
        None,
    )
    out: dict[str, Any] = {"conveyor": base, "recorded": twin, "metrics": {}}
    for m in METRICS:
        mine = row["metrics"].get(m.key)
        if mine is None:
            continue
        entry: dict[str, Any] = {"value": mine["median"]}
        for kind in ("results", "defaults"):
            peer = best.get(kind, {}).get(m.key)
            if peer is None:
                continue
            against = base
            if table[peer["variant"]]["recorded"] and twin and m.key not in CLIENT_KEYS:
                against = twin if m.key in table[twin]["metrics"] else base
            value = table[against]["metrics"][m.key]["median"]
            entry[kind] = {
                "peer": peer["variant"],
                "peer_value": peer["value"],
                "conveyor": against,
                "value": value,
                "times": times(value, peer["value"], m),
            }
        sides = [k for k in ("results", "defaults") if k in entry]
        if sides:
            entry["judged"] = min(sides, key=lambda k: entry[k]["times"])
            entry["times"] = entry[entry["judged"]]["times"]
        out["metrics"][m.key] = entry
    return out


def targets(table: dict[str, Any], compared: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of the issue's targets (`TARGETS`) against this run's medians: met, missed, or
    not measured (`met` None) when the variant or the best peer did not run. A ratio target is
    judged on `comparison`'s less favourable side (the best peer with results or with its
    defaults, whichever conveyor is the fewer times better than)."""
    out = []
    for t in TARGETS:
        m = metric(t.key)
        row = table.get(t.variant, {}).get("metrics", {}).get(t.key)
        entry: dict[str, Any] = {"variant": t.variant, "key": t.key, "met": None}
        if t.at_least is not None:
            entry["need"] = f">= {fmt(t.at_least, m.unit)} {m.unit}"
            if row is not None:
                entry["got"] = f"{fmt(row['median'], m.unit)} {m.unit}"
                entry["met"] = row["median"] >= t.at_least
        elif t.limit is not None:
            entry["need"] = f"<= {fmt(t.limit, m.unit)} {m.unit}"
            if row is not None:
                entry["got"] = f"{fmt(row['median'], m.unit)} {m.unit}"
                entry["met"] = row["median"] <= t.limit
        else:
            assert t.times is not None
            entry["need"] = f">= {t.times:g}x best peer"
            group = table.get(t.variant, {}).get("group", "")
            c = compared.get(group, {})
            r = c.get("metrics", {}).get(t.key) if c.get("conveyor") == t.variant else None
            if r is not None and "judged" in r:
                side = r[r["judged"]]
                entry["got"] = f"{r['times']:.2f}x {side['peer']}"
                entry["met"] = r["times"] >= t.times
        out.append(entry)
    return out


def _cell(row: dict[str, Any], m: Metric, part: str) -> str:
    if m.key in row["metrics"]:
        figures = row["metrics"][m.key]
        mark = "*" if "shared_from" in figures else ""
        if part == "median":
            return fmt(figures["median"], m.unit) + mark
        return f"{fmt(figures['min'], m.unit)}-{fmt(figures['max'], m.unit)}{mark}"
    if m.key in row["errors"]:
        return "ERR"
    return "n/a"


def _grid(
    rows: list[list[str]], header_rows: int = 1, left: int = 2, text: tuple[int, ...] = ()
) -> str:
    """Columns padded to their widest cell: the first `left` and those in `text` left-aligned,
    the rest right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i < left or i in text else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(header_rows, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def _figures(summary: dict[str, Any], part: str) -> str:
    rows = [["variant", "version", *[m.label for m in METRICS]]]
    rows.append(["", "", *[m.unit for m in METRICS]])
    for name, row in summary["variants"].items():
        if row["skipped"] or not (row["metrics"] or row["errors"] or row["na"]):
            continue  # skipped, or never reached (an interrupted run)
        version = (row["info"]["version"] or "?").split(" ")[0]
        rows.append([name, version, *[_cell(row, m, part) for m in METRICS]])
    return _grid(rows, header_rows=2)


def _ratio_tables(summary: dict[str, Any]) -> list[str]:
    """Per group, its conveyor rows against its own best peers counted the same way: rows
    observed through stored results against such peers, `-recorded` rows against the peers
    the recorder counts."""
    out = []
    for group in summary["best_peer"]:
        for recorded in (False, True):
            table = _ratio_table(summary, group, recorded)
            if table is None:
                continue
            title = f"on {group}, " if len(summary["best_peer"]) > 1 else ""
            title += "counted by the recorder:" if recorded else "observed as stored results:"
            out += [title, "", table, ""]
    return out[:-1] if out and out[-1] == "" else out


def _ratio_table(summary: dict[str, Any], group: str, recorded: bool) -> str | None:
    names = [
        n
        for n, row in summary["variants"].items()
        if row["conveyor"]
        and not row["skipped"]
        and row["group"] == group
        and row["recorded"] == recorded
    ]
    best_of = summary["best_peer"][group]["recorded" if recorded else "results"]
    if not names:
        return None if recorded else "no conveyor variant ran: no ratios"
    if not best_of:
        return None if recorded else "no peer ran: no ratios"
    rows = [["metric", "best peer", *names]]
    for m in METRICS:
        best = best_of.get(m.key)
        if best is None:
            continue
        cells = [f"{m.label} ({m.unit})", f"{best['variant']} {fmt(best['value'], m.unit)}"]
        for name in names:
            r = summary["ratios"].get(name, {}).get(m.key)
            verdict = "" if r is None else "better" if r["better"] else "worse"
            cells.append("-" if r is None else f"{r['ratio']:.2f} {verdict}")
        rows.append(cells)
    return _grid(rows)


GROUP_TITLES = {
    "redis": "Redis",
    "postgres": "PostgreSQL",
    "sqlite": "SQLite",
    "amqp": "RabbitMQ",
    "nats": "NATS",
}


def judged_rows(summary: dict[str, Any], group: str) -> list[list[str]]:
    """The group's judged table (`comparison`), header first: per figure conveyor's median,
    the best peer storing results and the best peer with its defaults, each with how many
    times better conveyor is (above 1: conveyor better), the less favourable of the two, and
    the targets on that figure, met or NOT met. Empty when conveyor did not run."""
    c = summary["comparisons"].get(group) or {}
    if not c.get("metrics"):
        return []
    rows = [
        [
            "figure",
            c["conveyor"],
            "best peer, results stored",
            "x",
            "best peer, its defaults",
            "x",
            "vs best peer",
            "targets",
        ]
    ]
    mine = [t for t in summary["targets"] if t["variant"] == c["conveyor"]]
    for m in METRICS:
        entry = c["metrics"].get(m.key)
        if entry is None:
            continue
        cells = [f"{m.label} ({m.unit})", fmt(entry["value"], m.unit)]
        for kind in ("results", "defaults"):
            side = entry.get(kind)
            if side is None:
                cells += ["-", "-"]
                continue
            peer = f"{side['peer']} {fmt(side['peer_value'], m.unit)}"
            if side["conveyor"] != c["conveyor"]:  # the -recorded row stood in for conveyor
                peer += f" (vs {side['conveyor']} {fmt(side['value'], m.unit)})"
            cells += [peer, f"{side['times']:.2f}x"]
        cells.append(f"{entry['times']:.2f}x ({entry['judged']})" if "judged" in entry else "-")
        cells.append("; ".join(_verdict(t) for t in mine if t["key"] == m.key))
        rows.append(cells)
    return rows


def _verdict(t: dict[str, Any]) -> str:
    met = "not measured" if t["met"] is None else "met" if t["met"] else "NOT met"
    return f"{t['need'].replace(' best peer', '')}: {met}"


def _judged_tables(summary: dict[str, Any]) -> list[str]:
    out = []
    for group in summary["best_peer"]:
        rows = judged_rows(summary, group)
        if rows:
            out += [f"{GROUP_TITLES[group]}:", "", _grid(rows, text=(2, 4, 6, 7)), ""]
    return out[:-1]


def render(summary: dict[str, Any], counts: Counts, reps: int, meta: dict[str, Any]) -> str:
    """The printed report: figures, ranges, ratios to the best peer, skips and failures."""
    status = "INTERRUPTED, partial figures. " if meta.get("interrupted") else ""
    servers = "; ".join(
        f"{name} {meta[name].get('version', '?')}"
        for name in ("redis", "postgres", "sqlite", "nats")
        if name in meta
    )
    parts = [
        f"{status}Medians of {reps} repetition(s); enqueue {counts.enqueue}, drain {counts.drain}, "
        f"sleep burst {counts.sleep}, latency {counts.latency} tasks at "
        f"{counts.latency_rate:g}/s; async concurrency {counts.concurrency}; "
        f"{servers}; {meta.get('seconds', '?')} s.",
        "",
        _figures(summary, "median"),
    ]
    for engine in ("nats", "amqp"):
        if f"{engine}_reference" in meta:
            parts[1:1] = [broker_reference.render(engine, meta[f"{engine}_reference"])]
    if "pg_reference" in meta:
        parts[1:1] = [pg_reference.render(meta["pg_reference"])]
    if "reference" in meta:
        parts[1:1] = [reference.render(meta["reference"])]
    if reps > 1:
        parts += ["", "min-max over the repetitions:", "", _figures(summary, "range")]
    parts += [
        "",
        "conveyor / best peer in this run (tasks/s: higher is better; s, ms, MB: lower is better):",
        "",
        *_ratio_tables(summary),
    ]
    parts += _scale_lines(summary)
    judged = _judged_tables(summary)
    if judged:
        parts += [
            "",
            "per engine: conveyor (one worker process, results stored) against the best peer "
            "storing results and the best peer with its library's defaults (x: how many times "
            "better conveyor is; vs best peer: the less favourable of the two, on which the "
            "targets are judged):",
            "",
            *judged,
        ]
    parts += ["", "the issue's targets (medians of this run):", "", _target_table(summary, meta)]
    notes = _notes(summary)
    if notes:
        parts += ["", *notes]
    return "\n".join(parts)


def _scale_lines(summary: dict[str, Any]) -> list[str]:
    """More worker processes against one (issue item 3): drain and sleep burst, as speed-ups."""
    lines = []
    table = summary["variants"]
    for name, row in table.items():
        twin = table.get(row.get("client_of") or "")
        if not row["conveyor"] or twin is None or row["options"].get("workers", "1") == "1":
            continue
        cells = []
        for key in ("drain", "sleep"):
            mine, one = row["metrics"].get(key), twin["metrics"].get(key)
            if mine and one and mine["median"] and one["median"]:
                m = metric(key)
                ratio = mine["median"] / one["median"]
                cells.append(f"{m.label} {ratio if m.higher_is_better else 1 / ratio:.2f}x")
        if cells:
            lines.append(f"{name} against {row['client_of']}: {', '.join(cells)} as fast")
    return ["", "more worker processes (same engine, this run):", "", *lines] if lines else []


def floors(meta: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What each group's server gives with a bare client and no task queue, by the metric key
    it bounds: the latency floors (`reference`, `pg_reference`, `broker_reference`) and, on
    RabbitMQ and NATS, the rate of one confirmed publish at a time."""
    return {
        "redis": reference.floor_medians(meta.get("reference", [])),
        "postgres": pg_reference.floor_medians(meta.get("pg_reference", [])),
        "sqlite": {},  # no server, no hop to measure
        "amqp": broker_reference.floor_medians(meta.get("amqp_reference", [])),
        "nats": broker_reference.floor_medians(meta.get("nats_reference", [])),
    }


def _target_table(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    by_group = floors(meta)
    rows = [["variant", "metric", "target", "this run", "met"]]
    group_of = {v.name: v.group for v in VARIANTS}
    present = {row["group"] for row in summary["variants"].values()}
    for t in summary["targets"]:
        if group_of[t["variant"]] not in present:
            continue  # another issue's server, not run this time
        m = metric(t["key"])
        got = t.get("got", "not measured")
        bounds = by_group[group_of[t["variant"]]]
        if t["key"] in bounds and "best peer" not in t["need"]:
            # an absolute figure the host bounds: show what the bare client gets, no queue
            bound = "floor" if not m.higher_is_better else "bare client"
            got += f" ({bound} {fmt(bounds[t['key']], m.unit)})"
        met = "-" if t["met"] is None else "met" if t["met"] else "NOT met"
        rows.append([t["variant"], m.label, t["need"], got, met])
    return _grid(rows, left=4)


def _notes(summary: dict[str, Any]) -> list[str]:
    notes = []
    shared = [
        f"{name} <- {figures['shared_from']}"
        for name, row in summary["variants"].items()
        for figures in row["metrics"].values()
        if "shared_from" in figures
    ]
    if shared:
        notes.append(f"* same client, bulk API measured once: {', '.join(shared)}")
    for name, row in summary["variants"].items():
        if row["skipped"]:
            notes.append(f"skipped {name}: {row['skipped']}")
        by_reason: dict[str, list[str]] = {}
        for key, reasons in row["errors"].items():
            by_reason.setdefault(reasons[-1], []).append(f"{key} ({len(reasons)}x)")
        for reason, keys in by_reason.items():
            notes.append(f"failed  {name} {', '.join(keys)}: {reason}")
    return notes


def error_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per distinct failure reason in a session: the figures it cost, and why."""
    by_reason: dict[str, list[str]] = {}
    for r in records:
        if r["kind"] == "error":
            by_reason.setdefault(r["reason"], []).append(r["key"])
    return [f"! {', '.join(keys)}: {reason}" for reason, keys in by_reason.items()]


def write_json(path: Path, run: Run, summary: dict[str, Any]) -> Path:
    """Write the run (counts, meta, every record) and its summary."""
    payload = {
        "meta": run.meta,
        "counts": json.loads(run.counts.to_json()),
        "reps": run.reps,
        "metrics": [m.__dict__ for m in METRICS],
        "summary": summary,
        "records": run.records,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def draw_chart(path: Path, summary: dict[str, Any], meta: dict[str, Any]) -> Path | str:
    """One horizontal bar panel per metric, medians with min-max whiskers; conveyor in color."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"not drawn ({exc})"
    rows = {n: r for n, r in summary["variants"].items() if not r["skipped"]}
    by_group = floors(meta)
    bounds = by_group["redis"] or by_group["postgres"]
    fig, axes = plt.subplots(2, 4, figsize=(20, 9), constrained_layout=True)
    for ax, m in zip(axes.flat, METRICS, strict=False):
        names = [n for n in rows if m.key in rows[n]["metrics"]]
        figures = [rows[n]["metrics"][m.key] for n in names]
        medians = [f["median"] for f in figures]
        low = [f["median"] - f["min"] for f in figures]
        high = [f["max"] - f["median"] for f in figures]
        colors = ["tab:orange" if rows[n]["conveyor"] else "tab:gray" for n in names]
        bars = ax.barh(names, medians, xerr=[low, high], color=colors, capsize=2)
        for bar, figure in zip(bars, figures, strict=True):
            if "shared_from" in figure:  # measured on the client twin
                bar.set_hatch("//")
        ax.bar_label(bars, [fmt(v, m.unit) for v in medians], padding=3, fontsize=8)
        if medians and min(medians) > 0 and max(medians) / min(medians) > 50:
            ax.set_xscale("log")
        if m.key in bounds:  # what (d) takes with no task queue at all
            ax.axvline(bounds[m.key], color="tab:blue", linestyle="--", linewidth=1)
        ax.margins(x=0.15)
        ax.invert_yaxis()
        better = "higher" if m.higher_is_better else "lower"
        ax.set_title(f"{m.label} ({m.unit}, {better} is better)", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    last = axes.flat[-1]
    last.axis("off")
    last.text(
        0.0,
        0.9,
        f"{meta.get('mode', '')} run, {meta.get('started', '')}\n"
        f"redis {meta.get('redis', {}).get('version', '?')}, {meta.get('machine', '')}\n"
        "orange: conveyor; gray: peers; hatched: same client, measured once\n"
        "bars: median; whiskers: min-max\n"
        "dashed (latency): the same hop with no task queue (bench/reference.py)",
        va="top",
        fontsize=9,
        wrap=True,
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
