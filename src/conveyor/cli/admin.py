"""The commands that change what waits: `purge`, and the dead-letter queue's `list` and
`requeue`.

`purge` and `dlq requeue` ask first when stdin is a terminal (`--yes` skips the question);
from a script, a pipe or CI they act at once, as they always did.
"""

from __future__ import annotations

import time

import click

from conveyor.cli.app import load_broker, run_with
from conveyor.cli.output import confirmed, echo_json, json_option
from conveyor.inspector import Inspector

__all__ = ["dlq", "purge"]

_YES_HELP = "do not ask (without a terminal nothing is asked anyway)"


@click.command()
@click.argument("app")
@click.option("--queue", help="only this queue")
@click.option("--yes", "-y", is_flag=True, help=_YES_HELP)
def purge(app: str, queue: str | None, yes: bool) -> int:
    """Delete waiting messages (running ones finish).

    On a terminal it says how many messages it would delete and asks first; --yes skips the
    question. From a script (stdin not a terminal) it deletes at once.
    """
    broker = load_broker(app)

    async def work() -> int:
        stats = await Inspector(broker).queues()
        waiting = sum(q.ready + q.scheduled for q in stats if queue is None or q.name == queue)
        where = f"queue {queue!r}" if queue else "every queue"
        question = f"Delete {waiting} waiting message(s) of {where} on {broker.transport.safe_url}?"
        if waiting and not confirmed(question, yes):
            click.echo("nothing purged", err=True)
            return 1
        count = await broker.transport.purge(queue)
        click.echo(f"purged {count} message(s)")
        return 0

    return run_with(broker, work)


@click.group()
def dlq() -> None:
    """The dead-letter queue: messages that failed for good."""


@dlq.command("list")
@click.argument("app")
@click.option("--limit", type=int, default=100, show_default=True, help="list at most this many")
@json_option
def dlq_list(app: str, limit: int, as_json: bool) -> None:
    """List dead-lettered messages."""
    broker = load_broker(app)
    inspector = Inspector(broker)
    letters = run_with(broker, lambda: inspector.dead_letters(limit))
    if as_json:
        echo_json(
            [
                {
                    "task_id": letter.task_id,
                    "task_name": inspector.describe(letter),
                    "queue": letter.queue,
                    "failed_at": letter.failed_at,
                    "reason": letter.reason,
                }
                for letter in letters
            ]
        )
        return
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
        name = inspector.describe(letter)
        click.echo(f"{letter.task_id} {name} queue={letter.queue} at {when}: {letter.reason}")
    if not letters:
        click.echo("the dead-letter queue is empty")


@dlq.command("requeue")
@click.argument("app")
@click.argument("task_ids", nargs=-1)
@click.option("--yes", "-y", is_flag=True, help=_YES_HELP)
def dlq_requeue(app: str, task_ids: tuple[str, ...], yes: bool) -> int:
    """Send dead-lettered messages (all, or TASK_IDS) back to their queues, to run again.

    On a terminal it asks first; --yes skips the question. From a script (stdin not a
    terminal) it requeues at once.
    """
    broker = load_broker(app)
    which = f"{len(task_ids)} dead letter(s)" if task_ids else "every dead letter"
    question = f"Send {which} back to its queue on {broker.transport.safe_url}, to run again?"

    async def work() -> int:
        any_letter = await Inspector(broker).dead_letters(1)  # none: nothing to ask about
        if any_letter and not confirmed(question, yes):
            click.echo("nothing requeued", err=True)
            return 1
        count = await broker.requeue_dead(list(task_ids) or None)
        click.echo(f"requeued {count} message(s)")
        return 0

    return run_with(broker, work)
