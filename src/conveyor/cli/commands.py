"""The `conveyor` group, `worker`, `ping` and `demo`; the other commands of SPEC §7 live in
`read` (info, inspect, result), `send`, `admin` (purge, dlq), `web` and `scheduler`."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click

from conveyor.cli.admin import dlq, purge
from conveyor.cli.app import load_broker, run_with
from conveyor.cli.output import echo_json, json_option, log_level_option
from conveyor.cli.read import info, inspect_cmd, result
from conveyor.cli.scheduler import scheduler
from conveyor.cli.send import send
from conveyor.cli.taskiq_options import TaskiqWorkerOptions, taskiq_worker_options
from conveyor.cli.web import web
from conveyor.errors import ConfigurationError, ConveyorError, ResultTimeout
from conveyor.logs import configure_logging

__all__ = ["cli"]


#: `--traceback` (read by `conveyor.cli.main`): an error prints its whole traceback.
_TRACEBACK: dict[str, Any] = {
    "is_flag": True,
    "expose_value": False,
    "help": "on an error, print the whole traceback, not one line",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conveyor")
@click.option("--traceback", **_TRACEBACK)
def cli() -> None:
    """conveyor: an async-first distributed task queue."""


def _refuse_concurrency(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise ConfigurationError(
            f"-c/--concurrency {value} (Celery's) has no single meaning here: -w/--workers N runs"
            " N worker processes, --max-async-tasks N runs up to N tasks at once in each"
        )


@cli.command()
@taskiq_worker_options
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
    "--queues",
    "-q",
    "-Q",  # Celery's
    default="default",
    show_default=True,
    help="comma-separated queues to consume",
)
@click.option(
    "-c",
    "--concurrency",
    expose_value=False,
    callback=_refuse_concurrency,
    help="Celery's; refused: say -w (processes) or --max-async-tasks (tasks at once in each)",
)
@click.option("--reload", "-r", is_flag=True, help="restart workers when a .py file changes")
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
    "--with-scheduler",
    "-B",
    "--beat",  # Celery's
    is_flag=True,
    help="also run the scheduler (in one worker process)",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    help="text, json, or a logging format string (Taskiq's)",
)
@log_level_option
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
    taskiq: TaskiqWorkerOptions,
) -> int:
    """Run workers for APP (module:broker), importing MODULES with the tasks.

    Taskiq's `taskiq worker` options are accepted where they mean something here, and refused
    with the reason otherwise.
    """
    from conveyor.worker.run import install_uvloop, run_worker, worker_options
    from conveyor.worker.supervisor import become_child, supervise_cli

    taskiq.check()
    taskiq.prepare()
    max_threads = taskiq.max_threadpool_threads or max_threads
    shutdown_timeout = taskiq.wait_tasks_timeout or shutdown_timeout
    if taskiq.configure_logging:
        configure_logging(log_level, "json" if log_format == "json" else "text")
        taskiq.custom_format(log_format)
    broker = load_broker(app, modules, discover, taskiq.patterns(), taskiq.root())
    broker.cast_types = broker.cast_types and not taskiq.no_parse
    supervised = workers > 1 or reload or max_memory or max_tasks_per_child
    if supervised and not child:
        argv = [sys.executable, "-m", "conveyor", "worker", app, *modules, "--child"]
        argv += taskiq.child_argv()
        argv += ["--max-async-tasks", str(max_async_tasks), "--max-threads", str(max_threads)]
        argv += ["--queues", queues, "--shutdown-timeout", str(shutdown_timeout)]
        argv += ["--log-format", log_format, "--log-level", log_level]
        argv += ["-fsd"] if discover else []
        argv += ["--max-memory", str(max_memory)] if max_memory else []
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)] if max_tasks_per_child else []
        reload_dirs = taskiq.reload_paths() if reload else None
        return supervise_cli(
            argv,
            workers,
            shutdown_timeout,
            reload_dirs,
            with_scheduler=with_scheduler,
            max_fails=None if taskiq.max_fails < 0 else taskiq.max_fails,
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
        **taskiq.worker_options(),
    )
    install_uvloop()
    asyncio.run(run_worker(broker, options, with_scheduler=with_scheduler))
    return 0


@cli.command()
@click.argument("app")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="seconds to wait for a worker to run the probe task",
)
@json_option
def ping(app: str, timeout: float, as_json: bool) -> int:
    """Check the broker and time a task's round trip through a worker."""
    broker = load_broker(app)
    url = broker.transport.safe_url

    async def work() -> int:
        start = time.perf_counter()
        await broker.startup()
        await broker.transport.queue_stats()
        reach = time.perf_counter() - start
        if not as_json:
            click.echo(f"broker {url} reachable in {reach * 1000:.1f} ms")
        start = time.perf_counter()
        handle = await broker.kiq_by_name("conveyor:ping")
        try:
            result = await handle.wait_result(timeout)
        except ResultTimeout:
            await handle.cancel()
            raise ConveyorError(f"no worker answered within {timeout:g} s") from None
        took = time.perf_counter() - start
        if as_json:
            shown = {"broker": url, "reachable_ms": reach * 1000, "worker": result.worker}
            echo_json({**shown, "round_trip_ms": took * 1000})
        else:
            click.echo(f"round trip through worker {result.worker} in {took * 1000:.1f} ms")
        return 0

    return run_with(broker, work)


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


for _command in (info, inspect_cmd, result, send, purge, dlq, web, scheduler):
    cli.add_command(_command)


def _with_traceback_option(group: click.Group) -> None:
    """Let `--traceback` follow any command too (`conveyor worker app:broker --traceback`)."""
    for command in group.commands.values():
        command.params.append(click.Option(["--traceback"], **_TRACEBACK))
        if isinstance(command, click.Group):
            _with_traceback_option(command)


_with_traceback_option(cli)
