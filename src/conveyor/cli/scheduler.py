"""`conveyor scheduler APP`: send the runs of the app's schedules (any number may run)."""

from __future__ import annotations

import asyncio

import click

from conveyor.cli.app import load_target
from conveyor.cli.output import log_level_option
from conveyor.logs import configure_logging

__all__ = ["scheduler"]


@click.command()
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
    "--misfire",
    type=click.Choice(["skip", "once"]),
    default="skip",
    show_default=True,
    help="runs missed while no scheduler ran: skip them, or send one",
)
@click.option(
    "--misfire-grace",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="seconds (at least 1) a run may be late and still be sent",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text lines, or one JSON object per line",
)
@log_level_option
def scheduler(
    app: str,
    modules: tuple[str, ...],
    discover: bool,
    misfire: str,
    misfire_grace: float,
    log_format: str,
    log_level: str,
) -> int:
    """Send due runs of APP's label schedules and stored schedules until SIGINT/SIGTERM.

    APP is module:broker, or module:scheduler for a scheduler object with its own sources.

    Each due run is sent exactly once however many schedulers run on the broker.
    """
    from conveyor.scheduler import Scheduler
    from conveyor.worker.run import install_uvloop, run_scheduler

    configure_logging(log_level, log_format)
    target = load_target(app, modules, discover)  # a broker, or a scheduler with its sources
    scheduler = target if isinstance(target, Scheduler) else Scheduler(target)
    scheduler.misfire, scheduler.misfire_grace = misfire, misfire_grace
    install_uvloop()
    asyncio.run(run_scheduler(scheduler))
    return 0
