"""The read-only commands: `info`, `inspect ...` and `result`; each takes `--json`.

A listing with nothing in it prints `(empty)`, so "nothing" is never mistaken for "no answer".
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click
import msgspec

from conveyor._urls import local_file
from conveyor.cli.app import load_broker, run_with
from conveyor.cli.output import EMPTY, echo_json, json_option, print_result, shown_value
from conveyor.engines.base import QueueStats
from conveyor.errors import ConveyorError
from conveyor.inspector import Inspector
from conveyor.scheduler import ScheduleInfo

__all__ = ["info", "inspect_cmd", "result"]


@click.command()
@click.argument("app")
@json_option
def info(app: str, as_json: bool) -> None:
    """Show the broker, its tasks and its queues.

    A relative SQLite URL (sqlite:///conveyor.db) names a file in the current directory; the
    absolute path is shown after it.
    """
    broker = load_broker(app)
    inspector = Inspector(broker)

    async def look() -> tuple[list[QueueStats], str | None]:
        return await inspector.queues(), await broker.transport.describe()

    queues, storage = run_with(broker, look)  # first: an unreachable broker prints nothing
    url = broker.transport.safe_url
    path = local_file(url)
    tasks = inspector.tasks()
    if as_json:
        echo_json(
            {
                "broker": type(broker).__name__,
                "url": url,
                "file": path,
                "storage": storage,
                "results": type(broker.result_backend).__name__,
                "format": broker.serializer.name,
                "signed": broker.signer.enabled,
                "tasks": tasks,
                "queues": queues,
            }
        )
        return
    shown_path = f" (the file {path})" if path and not url.endswith(path) else ""
    click.echo(f"broker:   {type(broker).__name__} {url}{shown_path}")
    if storage is not None:
        click.echo(f"storage:  {storage}")
    click.echo(f"results:  {type(broker.result_backend).__name__}")
    click.echo(f"format:   {broker.serializer.name}{', signed' if broker.signer.enabled else ''}")
    click.echo("tasks:")
    for task in tasks:
        click.echo(f"  {task.name}({', '.join(task.parameters)}) {task.labels or ''}")
    click.echo("queues:" if queues else f"queues:   {EMPTY}")
    for q in queues:
        click.echo(f"  {q.name}: {q.ready} ready, {q.scheduled} scheduled, {q.running} running")


@click.command("inspect")
@click.argument("what", type=click.Choice(["tasks", "queues", "workers", "active", "schedules"]))
@click.argument("app")
@json_option
def inspect_cmd(what: str, app: str, as_json: bool) -> None:
    """Show registered tasks, queue depths, live workers, running tasks or schedules.

    Workers report what they run within about a second of a change.
    """
    broker = load_broker(app)
    inspector = Inspector(broker)
    found: list[Any]
    if what == "tasks":
        found = list[Any](inspector.tasks())
    else:
        reads: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "queues": inspector.queues,
            "workers": inspector.workers,
            "active": inspector.active,
            "schedules": inspector.schedules,
        }
        found = run_with(broker, reads[what])
    if as_json:
        echo_json(found)
    elif what == "schedules":
        _print_schedules(found)
    elif not found:
        click.echo(EMPTY)
    else:
        for item in found:
            click.echo(_LINES[what](item))


def _task_line(task: Any) -> str:
    return f"{task.name}({', '.join(task.parameters)}) {task.labels or ''}"


def _queue_line(q: Any) -> str:
    return f"{q.name}: {q.ready} ready, {q.scheduled} scheduled, {q.running} running"


def _worker_line(w: Any) -> str:
    return (
        f"{w.name} queues={','.join(w.queues) or '*'} running={len(w.running)} "
        f"processed={w.processed} up={w.uptime:.0f}s rss={w.rss_mb:.0f}MB "
        f"concurrency={w.concurrency} succeeded={w.counters.get('succeeded', 0)} "
        f"failed={w.counters.get('failed', 0)} retried={w.counters.get('retried', 0)}"
    )


def _active_line(active: Any) -> str:
    return f"{active.worker} {active.task_id} {active.task_name}"


_LINES = {
    "tasks": _task_line,
    "queues": _queue_line,
    "workers": _worker_line,
    "active": _active_line,
}


def _print_schedules(schedules: list[ScheduleInfo]) -> None:
    for s in schedules:
        when = s.next_fire.isoformat(timespec="seconds") if s.next_fire else "-"
        source = "stored" if s.stored else "label"
        call = json.dumps({"args": s.args, "kwargs": s.kwargs, "labels": s.labels}, default=str)
        click.echo(f"{s.id} {s.task_name} {s.schedule} next={when} {source} {call}")
    if not schedules:
        click.echo("no schedules")


@click.command()
@click.argument("app")
@click.argument("task_id")
@json_option
def result(app: str, task_id: str, as_json: bool) -> int:
    """Print the status of TASK_ID: its result once finished, its progress while it runs."""
    broker = load_broker(app)

    async def work() -> int:
        handle = broker.get_handle(task_id)
        found = await handle.get_result()
        status = found.status if found is not None else await handle.status()
        if status is None:
            raise ConveyorError(f"no task with id {task_id!r}")
        progress = await handle.get_progress()
        if as_json:
            shown = None if found is None else msgspec.to_builtins(found, enc_hook=repr)
            echo_json({"task_id": task_id, "status": status, "progress": progress, "result": shown})
        elif found is not None:
            print_result(found)
        else:
            click.echo(f"status: {status}")
            if progress is not None:
                click.echo(f"progress: {shown_value(progress)}")
        return 0

    return run_with(broker, work)
