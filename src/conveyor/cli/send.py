"""`conveyor send`: send a task by name, and with `--wait` follow it to its result.

A name the app does not register is refused with the closest registered name, unless the app
registers no task of its own (a producer that only sends: the workers know the names) or
`--unregistered` is given. Arguments are checked against the task's signature and annotations
before anything is sent. While `--wait` waits it shows the task's progress as it changes, and
says when no live worker consumes the task's queue (the wait would otherwise end in a silent
timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
from typing import Any

import click

from conveyor.broker import Broker
from conveyor.cli.app import load_broker, run_with
from conveyor.cli.output import json_arg, print_result, shown_value
from conveyor.errors import TaskNotFound
from conveyor.inspector import Inspector
from conveyor.result import TaskHandle, TaskResult, TaskStatus

__all__ = ["send"]

#: Seconds between looks at a waited task's progress.
PROGRESS_SECONDS = 0.25
#: Seconds a waited task may stay queued before the live workers' queues are looked at.
CONSUMER_GRACE_SECONDS = 1.0


@click.command()
@click.argument("app")
@click.argument("task_name")
@click.option("--args", "args_json", help="positional arguments as a JSON list")
@click.option("--kwargs", "kwargs_json", help="keyword arguments as a JSON object")
@click.option("--wait", is_flag=True, help="wait for the result and print it, with progress")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="seconds --wait waits for the result",
)
@click.option(
    "--unregistered",
    is_flag=True,
    help="send TASK_NAME even though APP does not register it (a task only workers import)",
)
def send(
    app: str,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    wait: bool,
    timeout: float,
    unregistered: bool,
) -> int:
    """Send TASK_NAME with JSON arguments; print its id (or its result with --wait).

    The name must be registered by APP (e.g. main:add for `add` in main.py) unless APP
    registers no task at all or --unregistered is given.
    """
    args = json_arg(args_json, list, "--args")
    kwargs = json_arg(kwargs_json, dict, "--kwargs")
    broker = load_broker(app)
    if not unregistered:
        check_name(broker, app, task_name)

    async def work() -> int:
        handle = await broker.kiq_by_name(task_name, *args, **kwargs)
        click.echo(handle.task_id)
        if not wait:
            return 0
        queue = Inspector(broker).queue_of(task_name)
        result = await wait_showing_progress(broker, handle, queue, timeout)
        print_result(result)
        return 1 if result.is_err else 0

    return run_with(broker, work)


def check_name(broker: Broker, app: str, name: str) -> None:
    """Refuse a name `broker` does not register, naming the closest one.

    Raises:
        TaskNotFound: the app registers tasks, and none is called `name`.
    """
    if broker.find_task(name) is not None:
        return
    names = sorted(n for n in broker.get_all_tasks() if not n.startswith("conveyor:"))
    if not names:
        return  # a producer that registers nothing: only the workers know the names
    guess = closest(name, names)
    hint = f"did you mean {guess}?" if guess else f"it registers {', '.join(names[:5])}"
    more = " ..." if not guess and len(names) > 5 else ""
    raise TaskNotFound(
        f"{app} registers no task {name!r}: {hint}{more} (--unregistered sends it anyway)"
    )


def closest(name: str, names: list[str]) -> str | None:
    """The registered name `name` most likely meant: one whose function name is `name`
    (`add` for `main:add`), else the closest by `difflib`, of the full or the short names."""
    short = {n.rsplit(":", 1)[-1].rsplit(".", 1)[-1]: n for n in names}
    if name in short:
        return short[name]
    found = difflib.get_close_matches(name, names, n=1)
    if found:
        return found[0]
    found = difflib.get_close_matches(name, list(short), n=1)
    return short[found[0]] if found else None


async def wait_showing_progress(
    broker: Broker, handle: TaskHandle[Any], queue: str, timeout: float
) -> TaskResult[Any]:
    """`handle.wait_result(timeout)`, printing progress changes and, once, a warning when no
    live worker consumes `queue` while the task waits (both on stderr)."""
    watcher = asyncio.create_task(_watch(broker, handle, queue))
    try:
        return await handle.wait_result(timeout)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _watch(broker: Broker, handle: TaskHandle[Any], queue: str) -> None:
    shown: Any = None
    waited, warned = 0.0, False
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        waited += PROGRESS_SECONDS
        progress = await handle.get_progress()
        if progress is not None and progress != shown:
            shown = progress
            click.echo(f"progress: {shown_value(progress)}", err=True)
        if not warned and waited >= CONSUMER_GRACE_SECONDS:
            warned = True
            await _warn_unless_consumed(broker, handle, queue)


async def _warn_unless_consumed(broker: Broker, handle: TaskHandle[Any], queue: str) -> None:
    if await handle.status() not in (TaskStatus.QUEUED, TaskStatus.SCHEDULED):
        return
    workers = await Inspector(broker).workers()
    if any(w.consumes(queue) for w in workers):
        return
    others = sorted({q for w in workers for q in w.queues})
    running = f"live workers consume {', '.join(others)}" if workers else "no worker is running"
    click.echo(
        f"conveyor: warning: no live worker consumes queue {queue!r} ({running}); "
        f"start one with --queues {queue}",
        err=True,
    )
