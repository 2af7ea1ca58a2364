"""The commands of SPEC §7 except `web` and `scheduler`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.broker import Broker
from conveyor.cli.app import load_broker
from conveyor.cli.logs import configure_logging
from conveyor.cli.scheduler import scheduler
from conveyor.cli.web import web
from conveyor.errors import ConfigurationError, ConveyorError, ResultTimeout
from conveyor.inspector import Inspector
from conveyor.scheduler import ScheduleInfo

__all__ = ["cli"]

T = TypeVar("T")
APP_HELP = "the broker as module:attribute, e.g. app.tasks:broker"


def _run(broker: Broker, work: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await work()
        finally:
            await broker.shutdown()

    return asyncio.run(main())


def _json_arg(value: str | None, kind: type, name: str) -> Any:
    """Parse an option's JSON; a mistake is a `ConfigurationError` (one line, exit code 2)."""
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, kind):
        shown = "list" if kind is list else "object"
        raise ConfigurationError(f"{name} must be a JSON {shown}, not {value!r}")
    return parsed


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conveyor")
def cli() -> None:
    """conveyor: an async-first distributed task queue."""


@cli.command()
@click.argument("app")
@click.argument("modules", nargs=-1)
@click.option(
    "-fsd",
    "--fs-discover",
    "discover",
    is_flag=True,
    help="import every tasks.py below the current directory",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1),
    envvar="CONVEYOR_WORKERS",
    default=1,
    show_default=True,
    help="worker processes",
)
@click.option(
    "--max-async-tasks",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="tasks run at once per process",
)
@click.option(
    "--max-threads",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="threads for sync tasks per process",
)
@click.option(
    "--queues", "-q", default="default", show_default=True, help="comma-separated queues to consume"
)
@click.option("--reload", is_flag=True, help="restart workers when a .py file changes")
@click.option(
    "--max-memory", type=click.FloatRange(1), help="restart a worker whose RSS passes this many MB"
)
@click.option(
    "--max-tasks-per-child", type=click.IntRange(1), help="restart a worker after this many tasks"
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="seconds running tasks get to finish on SIGTERM",
)
@click.option(
    "--with-scheduler", is_flag=True, help="also run the scheduler (in one worker process)"
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--child", is_flag=True, hidden=True)
def worker(
    app: str,
    modules: tuple[str, ...],
    discover: bool,
    workers: int,
    max_async_tasks: int,
    max_threads: int,
    queues: str,
    reload: bool,
    max_memory: float | None,
    max_tasks_per_child: int | None,
    shutdown_timeout: float,
    with_scheduler: bool,
    log_format: str,
    log_level: str,
    child: bool,
) -> int:
    """Run workers for APP (module:broker), importing MODULES with the tasks."""
    from conveyor.worker.run import install_uvloop, run_worker, worker_options
    from conveyor.worker.supervisor import become_child, supervise_cli

    configure_logging(log_level, log_format)
    broker = load_broker(app, modules, discover)
    supervised = workers > 1 or reload or max_memory or max_tasks_per_child
    if supervised and not child:
        argv = [sys.executable, "-m", "conveyor", "worker", app, *modules, "--child"]
        argv += ["--max-async-tasks", str(max_async_tasks), "--max-threads", str(max_threads)]
        argv += ["--queues", queues, "--shutdown-timeout", str(shutdown_timeout)]
        argv += ["--log-format", log_format, "--log-level", log_level]
        argv += ["-fsd"] if discover else []
        argv += ["--max-memory", str(max_memory)] if max_memory else []
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)] if max_tasks_per_child else []
        reload_dir = Path.cwd() if reload else None
        return supervise_cli(
            argv, workers, shutdown_timeout, reload_dir, with_scheduler=with_scheduler
        )
    if child:
        become_child()
    options = worker_options(
        queues=queues,
        max_async_tasks=max_async_tasks,
        max_threads=max_threads,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_mb=max_memory,
        shutdown_timeout=shutdown_timeout,
    )
    install_uvloop()
    asyncio.run(run_worker(broker, options, with_scheduler=with_scheduler))
    return 0


@cli.command()
@click.argument("app")
def info(app: str) -> None:
    """Show the broker, its tasks and its queues."""
    broker = load_broker(app)
    inspector = Inspector(broker)
    queues = _run(broker, inspector.queues)  # first: an unreachable broker prints nothing
    click.echo(f"broker:   {type(broker).__name__} {broker.transport.safe_url}")
    where = _run(broker, broker.transport.describe)
    if where is not None:
        click.echo(f"storage:  {where}")
    click.echo(f"results:  {type(broker.result_backend).__name__}")
    click.echo(f"format:   {broker.serializer.name}{', signed' if broker.signer.enabled else ''}")
    click.echo("tasks:")
    for task in inspector.tasks():
        click.echo(f"  {task.name}({', '.join(task.parameters)}) {task.labels or ''}")
    click.echo("queues:" if queues else "queues:   (empty)")
    for q in queues:
        click.echo(f"  {q.name}: {q.ready} ready, {q.scheduled} scheduled, {q.running} running")


@cli.command()
@click.argument("app")
@click.option("--timeout", type=float, default=10.0, show_default=True)
def ping(app: str, timeout: float) -> int:
    """Check the broker and time a task's round trip through a worker."""
    broker = load_broker(app)

    async def work() -> int:
        start = time.perf_counter()
        await broker.startup()
        await broker.transport.queue_stats()
        reach = time.perf_counter() - start
        click.echo(f"broker {broker.transport.safe_url} reachable in {reach * 1000:.1f} ms")
        start = time.perf_counter()
        handle = await broker.kiq_by_name("conveyor:ping")
        try:
            result = await handle.wait_result(timeout)
        except ResultTimeout:
            await handle.cancel()
            raise ConveyorError(f"no worker answered within {timeout:g} s") from None
        took = time.perf_counter() - start
        click.echo(f"round trip through worker {result.worker} in {took * 1000:.1f} ms")
        return 0

    return _run(broker, work)


@cli.command()
@click.argument("app")
@click.argument("task_name")
@click.option("--args", "args_json", help="positional arguments as a JSON list")
@click.option("--kwargs", "kwargs_json", help="keyword arguments as a JSON object")
@click.option("--wait", is_flag=True, help="wait for the result and print it")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def send(
    app: str,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    wait: bool,
    timeout: float,
) -> int:
    """Send TASK_NAME with JSON arguments; print its id (or its result with --wait)."""
    args = _json_arg(args_json, list, "--args")
    kwargs = _json_arg(kwargs_json, dict, "--kwargs")
    broker = load_broker(app)

    async def work() -> int:
        handle = await broker.kiq_by_name(task_name, *args, **kwargs)
        click.echo(handle.task_id)
        if not wait:
            return 0
        result = await handle.wait_result(timeout)
        _print_result(result)
        return 1 if result.is_err else 0

    return _run(broker, work)


def _print_result(result: Any) -> None:
    click.echo(f"status: {result.status}")
    if result.is_err:
        click.echo(f"error:  {result.error_type}: {result.error_message}")
    else:
        click.echo(f"result: {json.dumps(result.return_value, default=str)}")
    click.echo(f"time:   {result.execution_time * 1000:.1f} ms, attempts {result.attempts}")


@cli.command()
@click.argument("app")
@click.argument("task_id")
def result(app: str, task_id: str) -> int:
    """Print the status and result of TASK_ID."""
    broker = load_broker(app)

    async def work() -> int:
        handle = broker.get_handle(task_id)
        found = await handle.get_result()
        if found is not None:
            _print_result(found)
            return 0
        status = await handle.status()
        if status is None:
            raise ConveyorError(f"no task with id {task_id!r}")
        click.echo(f"status: {status}")
        return 0

    return _run(broker, work)


@cli.command("inspect")
@click.argument("what", type=click.Choice(["tasks", "queues", "workers", "active", "schedules"]))
@click.argument("app")
def inspect_cmd(what: str, app: str) -> None:
    """Show registered tasks, queue depths, live workers, running tasks or schedules."""
    broker = load_broker(app)
    inspector = Inspector(broker)
    if what == "tasks":
        for task in inspector.tasks():
            click.echo(f"{task.name}({', '.join(task.parameters)}) {task.labels or ''}")
    elif what == "queues":
        for q in _run(broker, inspector.queues):
            click.echo(f"{q.name}: {q.ready} ready, {q.scheduled} scheduled, {q.running} running")
    elif what == "workers":
        for w in _run(broker, inspector.workers):
            click.echo(
                f"{w.name} queues={','.join(w.queues)} running={len(w.running)} "
                f"processed={w.processed} up={w.uptime:.0f}s rss={w.rss_mb:.0f}MB "
                f"concurrency={w.concurrency} succeeded={w.counters.get('succeeded', 0)} "
                f"failed={w.counters.get('failed', 0)} retried={w.counters.get('retried', 0)}"
            )
    elif what == "schedules":
        _print_schedules(_run(broker, inspector.schedules))
    else:
        for worker_name, task_id in _run(broker, inspector.active):
            click.echo(f"{worker_name} {task_id}")


def _print_schedules(schedules: list[ScheduleInfo]) -> None:
    for s in schedules:
        when = s.next_fire.isoformat(timespec="seconds") if s.next_fire else "-"
        source = "stored" if s.stored else "label"
        call = json.dumps({"args": s.args, "kwargs": s.kwargs, "labels": s.labels}, default=str)
        click.echo(f"{s.id} {s.task_name} {s.schedule} next={when} {source} {call}")
    if not schedules:
        click.echo("no schedules")


@cli.command()
@click.argument("app")
@click.option("--queue", help="only this queue")
def purge(app: str, queue: str | None) -> None:
    """Delete waiting messages (running ones finish)."""
    broker = load_broker(app)
    count = _run(broker, lambda: broker.transport.purge(queue))
    click.echo(f"purged {count} message(s)")


@cli.group()
def dlq() -> None:
    """The dead-letter queue: messages that failed for good."""


@dlq.command("list")
@click.argument("app")
@click.option("--limit", type=int, default=100, show_default=True)
def dlq_list(app: str, limit: int) -> None:
    """List dead-lettered messages."""
    broker = load_broker(app)
    inspector = Inspector(broker)
    letters = _run(broker, lambda: inspector.dead_letters(limit))
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
        name = inspector.describe(letter)
        click.echo(f"{letter.task_id} {name} queue={letter.queue} at {when}: {letter.reason}")
    if not letters:
        click.echo("the dead-letter queue is empty")


@dlq.command("requeue")
@click.argument("app")
@click.argument("task_ids", nargs=-1)
def dlq_requeue(app: str, task_ids: tuple[str, ...]) -> None:
    """Send dead-lettered messages (all, or TASK_IDS) back to their queues."""
    broker = load_broker(app)
    count = _run(broker, lambda: broker.requeue_dead(list(task_ids) or None))
    click.echo(f"requeued {count} message(s)")


@cli.command()
@click.option(
    "--tasks",
    "count",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="no-op tasks in the throughput part",
)
@click.option("--keep", is_flag=True, help="keep the demo database instead of deleting it")
def demo(count: int, keep: bool) -> int:
    """Run the embedded default end to end: a worker, example tasks, live progress, results."""
    from conveyor.cli.demo import run_demo

    return run_demo(count, keep)


cli.add_command(web)
cli.add_command(scheduler)
