"""Run every library's protocol on one private server, interleaved, and report (`bench/run`).

    python -m bench.harness [--quick] [--engine redis|postgres|sqlite|amqp|nats|all] [--only ...]

The Redis group runs on a private redis-server, the PostgreSQL group on a private postgres
(both `bench.servers`), each started only when a selected variant needs it and stopped by its pid;
the SQLite group needs no server (each library's file in the run's temporary directory), the
RabbitMQ group uses the machine's RabbitMQ under names of its own (`bench.peers.rabbitmq`) and
the private Redis for state and results, the NATS group a private `nats-server -js`
(`bench.servers` too) and that Redis for taskiq's results.

Each repetition runs every selected variant once, the order reversed every other repetition
(A, B, C, then C, B, A, ...), so a host that speeds up or slows down during the run does not
always favour the variants that come first. A session is one or two driver processes in the
variant's venv: `bulk` (the bulk half of scenario a, for libraries with a bulk API) and
`worker` (single sends, then b-e). Drivers run in their own process group, ended as a group if
they overrun; a failed library prints a one-line reason and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import broker_reference, pg_reference, reference, report
from bench.driver import PREFIX
from bench.peers import brokers as brokers_of_peers
from bench.protocol import FULL, QUICK, Counts
from bench.servers import NatsServer, PostgresServer, RedisServer, ServerError
from bench.variants import GROUPS, Variant, select

__all__ = ["Run", "main"]

#: The figures each driver phase reports (a driver that dies is charged with the missing ones).
PHASE_KEYS = {
    "bulk": ("enqueue_bulk",),
    "worker": ("enqueue_single", "drain", "sleep", "latency_p50", "latency_p99", "rss_peak"),
}

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass
class Run:
    """Everything one invocation measured, in the order it happened."""

    counts: Counts
    reps: int
    variants: list[Variant]
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of `bench/run`."""
    parser = argparse.ArgumentParser(
        prog="bench/run", description="conveyor and its peers on a private Redis or PostgreSQL."
    )
    parser.add_argument(
        "--engine",
        choices=[*GROUPS, "all"],
        help="the group of variants: redis (default), postgres, sqlite, amqp, nats, or all",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    parser.add_argument(
        "--only", help="comma-separated variants or libraries, e.g. conveyor,taskiq"
    )
    parser.add_argument("--reps", type=_positive, help="repetitions (default 3, or 1 with --quick)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every task count, e.g. 0.5"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run_driver(
    variant: Variant, phase: str, rep: int, run: Run, server_url: str, workdir: Path, logs: Path
) -> list[dict[str, Any]]:
    """Run one driver phase and return its records (an `error` record when it failed)."""
    python = BENCH / variant.venv / "bin" / "python"
    stem = f"{variant.name}-r{rep + 1}-{phase}"
    argv = [
        str(python), "-m", "bench.driver",
        "--variant", variant.name, "--phase", phase,
        "--server-url", server_url, "--counts", run.counts.to_json(),
        "--workdir", str(workdir), "--log", str(logs / f"{stem}.worker.log"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), _pythonpath()]))}
    limit = run.counts.timeout * (1 if phase == "bulk" else 5) + 60
    with (logs / f"{stem}.driver.log").open("wb") as stderr:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=limit)
            failure = None if proc.returncode == 0 else f"driver exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            _end_group(proc)
            out, _ = proc.communicate()
            failure = f"driver overran its {limit:.0f} s limit and was stopped"
        except BaseException:  # Ctrl-C: end the driver and its worker, then stop
            _end_group(proc)
            raise
    records = _parse(out)
    if failure is not None:
        reason = f"{failure}: {_tail(logs / f'{stem}.driver.log')}"
        reported = {r.get("key") for r in records}
        missing = [key for key in PHASE_KEYS[phase] if key not in reported]
        records += [{"kind": "error", "key": key, "reason": reason} for key in missing]
    return records


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


def _parse(out: bytes) -> list[dict[str, Any]]:
    records = []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(PREFIX):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line[len(PREFIX) :]))
    return records


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-2:])[:300] or "(no output)"
    return "(no output)"


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the driver's own process group (driver and worker), SIGKILL it after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            with contextlib.suppress(ProcessLookupError):  # children left behind by the worker
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Servers:
    """The private servers of this run: Redis, PostgreSQL and NATS, each only when a group needs
    it. The RabbitMQ and NATS groups are given the Redis URL (state, results, the run's prefix);
    NATS's own URL reaches the drivers as `BENCH_NATS_URL`."""

    redis: RedisServer | None = None
    postgres: PostgresServer | None = None
    nats: NatsServer | None = None

    def url(self, group: str) -> str:
        """The URL a variant of `group` is given ("sqlite:": no server, the adapter's file)."""
        if group == "sqlite":
            return "sqlite:"
        if group == "postgres":
            assert self.postgres is not None
            return self.postgres.url()
        assert self.redis is not None
        return self.redis.url(0)

    def reset(self, group: str) -> None:
        """Empty the group's server before a driver: FLUSHALL, or a new database (on SQLite
        the adapter deletes its own file)."""
        if group == "sqlite":
            return
        if group == "postgres":
            assert self.postgres is not None
            self.postgres.recreate()
        else:
            assert self.redis is not None
            self.redis.flushall()


def run_session(
    variant: Variant, rep: int, run: Run, servers: Servers, workdir: Path, logs: Path
) -> None:
    """One variant in one repetition; prints one line of figures (or the skip reason)."""
    start = time.monotonic()
    got: list[dict[str, Any]] = []
    phases = ["worker"]
    if not has_bulk_api(variant):
        got.append({"kind": "na", "key": "enqueue_bulk", "reason": "no bulk API", "phase": "bulk"})
    elif variant.client_of in {v.name for v in run.variants}:
        got.append({"kind": "shared", "key": "enqueue_bulk", "from": variant.client_of})
    else:
        phases.insert(0, "bulk")
    for phase in phases:
        servers.reset(variant.group)
        records = run_driver(variant, phase, rep, run, servers.url(variant.group), workdir, logs)
        got += [{"phase": phase, **record} for record in records]
        skip = next((r["reason"] for r in records if r["kind"] == "skip"), None)
        if skip is not None:
            run.skipped[variant.name] = skip
            print(f"  {variant.name:<20} skipped: {skip}", flush=True)
            return
    run.records += [{"variant": variant.name, "rep": rep + 1, **record} for record in got]
    print(f"  {variant.name:<20} {report.session_line(got)}  ({time.monotonic() - start:.0f} s)")
    for line in report.error_lines(got):
        print(f"  {'':<20} {line}", flush=True)


def has_bulk_api(variant: Variant) -> bool:
    """Whether the variant's adapter has a bulk API (adapter modules import no library)."""
    module = importlib.import_module(f"bench.peers.{variant.adapter}")
    return module.ADAPTER.bulk_api is not None


def missing_venv(variant: Variant) -> str | None:
    """Why `variant` cannot run from its venv, or None."""
    python = BENCH / variant.venv / "bin" / "python"
    if python.exists():
        return None
    return f"bench/{variant.venv} is missing (bench/run creates it from its requirements file)"


def measure(run: Run) -> None:
    """Start the private servers and run every repetition of every variant."""
    for variant in run.variants:
        reason = missing_venv(variant)
        if reason is not None:
            run.skipped[variant.name] = reason
            print(f"  {variant.name:<20} skipped: {reason}")
    logs = run.meta["logs"] = str(Path(run.meta["out"]) / "logs")
    Path(logs).mkdir(parents=True, exist_ok=True)
    groups = {v.group for v in run.variants if v.name not in run.skipped}
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, groups, run)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
        for rep in range(run.reps):
            print(f"repetition {rep + 1}/{run.reps}", flush=True)
            measure_references(servers, groups, run)
            order = run.variants if rep % 2 == 0 else run.variants[::-1]
            for variant in order:
                if variant.name not in run.skipped:
                    run_session(variant, rep, run, servers, Path(tmp), Path(logs))


def start_servers(stack: contextlib.ExitStack, groups: set[str], run: Run) -> Servers:
    """Start the servers `groups` need; `stack` stops them (by pid) when the run ends."""
    servers = Servers()
    if groups & {"redis", "amqp", "nats"}:  # RabbitMQ's and NATS's groups: state, results
        redis = servers.redis = stack.enter_context(RedisServer())
        run.meta["redis"] = {"version": redis.version(), "url": redis.url(0)}
        print(f"redis-server {redis.version()} on {redis.url(0)} (pid {redis.pid})")
    if "postgres" in groups:
        pg = servers.postgres = stack.enter_context(PostgresServer())
        run.meta["postgres"] = {"version": pg.version(), "url": pg.url()}
        print(f"postgres {pg.version()} on {pg.url()} (pid {pg.pid}, data in {pg.root})")
    if "nats" in groups:
        nats = servers.nats = stack.enter_context(NatsServer())
        os.environ["BENCH_NATS_URL"] = nats.url()  # inherited by every driver and worker
        run.meta["nats"] = {"version": nats.version(), "url": nats.url()}
        print(f"nats-server {nats.version()} on {nats.url()} (pid {nats.pid})")
    if "sqlite" in groups:  # no server: each library's file in the run's temporary directory
        run.meta["sqlite"] = {"version": sqlite3.sqlite_version}
    return servers


def measure_references(servers: Servers, groups: set[str], run: Run) -> None:
    """Each started server's machine reference, and RabbitMQ's, once per repetition."""
    if servers.redis is not None:
        sample = reference.measure(servers.redis, run.counts)
        run.meta.setdefault("reference", []).append(sample)
        print(textwrap.indent(reference.render([sample]), "  "), flush=True)
    if servers.postgres is not None:
        sample = pg_reference.measure(servers.postgres, run.counts)
        run.meta.setdefault("pg_reference", []).append(sample)
        print(textwrap.indent(pg_reference.render([sample]), "  "), flush=True)
    brokers = {"amqp": brokers_of_peers.amqp_url()} if "amqp" in groups else {}
    if servers.nats is not None:
        brokers["nats"] = servers.nats.url()
    for engine, url in brokers.items():
        assert servers.redis is not None  # both groups keep state and results in it
        queue = f"{brokers_of_peers.prefix(servers.redis.url(0))}_reference"
        c = run.counts
        sample = broker_reference.measure(
            engine, url, queue, c.reference, c.latency, c.latency_rate
        )
        run.meta.setdefault(f"{engine}_reference", []).append(sample)
        print(textwrap.indent(broker_reference.render(engine, [sample]), "  "), flush=True)


def _interrupt(signum: int, frame: object) -> None:
    """Turn the first signal into KeyboardInterrupt; ignore more, so clean-up runs to its end."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def conveyor_source() -> str:
    """The commit conveyor was measured at, and whether src/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--", "src")
    return f"at {commit}" + (" with uncommitted changes in src/" if dirty else "")


def warn_if_busy(run: Run) -> None:
    """Say so when other processes already load the CPUs: the figures will be noisy."""
    load = run.meta["load_at_start"][0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f} before the run: other processes share the "
            f"{os.cpu_count()} CPUs, so the figures will be noisy"
        )


def finish(run: Run, out: Path, chart: bool) -> None:
    """Print the report and write latest.json (and the chart)."""
    run.meta["load_at_end"] = os.getloadavg()
    summary = report.summarize(run.records, run.variants, run.skipped)
    print()
    reps = run.reps  # an interrupted run's medians are over the repetitions that ran
    if run.meta.get("interrupted"):
        reps = max((r["rep"] for r in run.records), default=0)
    print(report.render(summary, run.counts, reps, run.meta))
    print(f"JSON: {report.write_json(out / 'latest.json', run, summary)}")
    if chart:
        print(f"chart: {report.draw_chart(out / 'chart.png', summary, run.meta)}")


def main(argv: list[str] | None = None) -> int:
    """Measure, then print the table and write the JSON and the chart."""
    args = parse_args(argv)
    try:
        variants = select(args.only, args.engine)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.list:
        for v in variants:
            print(f"{v.name:<20} {v.group:<9} bench/{v.venv}  {v.options or ''}")
        return 0
    if args.scale <= 0:
        print("--scale must be above 0", file=sys.stderr)
        return 2
    counts = (QUICK if args.quick else FULL).scaled(args.scale)
    reps = args.reps or (1 if args.quick else 3)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    run = Run(counts, reps, variants)
    run.meta.update(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        argv=" ".join(sys.argv[1:] if argv is None else argv),
        mode=("quick" if args.quick else "full") + ("" if args.scale == 1 else f" x{args.scale:g}"),
        out=str(out),
        python=sys.version.split()[0],
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        conveyor_source=conveyor_source(),
        load_at_start=os.getloadavg(),
    )
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # stop what we started, then exit
        signal.signal(sig, _interrupt)
    print(f"bench: {run.meta['mode']} run, {reps} repetition(s), {len(variants)} variant(s)")
    print(f"conveyor {run.meta['conveyor_source']}")
    warn_if_busy(run)
    started = time.monotonic()
    try:
        measure(run)
    except ServerError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted; workers, drivers and servers stopped", file=sys.stderr)
        run.meta["interrupted"] = True
        if run.records:
            finish(run, out, chart=False)
        return 130
    run.meta["seconds"] = round(time.monotonic() - started, 1)
    finish(run, out, chart=not args.no_chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
