"""What the commands share: parsing JSON options, `--json` output, results and progress as
lines, and the confirmation of destructive commands."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import msgspec

from conveyor.errors import ConfigurationError
from conveyor.result import TaskResult

__all__ = [
    "EMPTY",
    "confirmed",
    "echo_json",
    "json_arg",
    "json_option",
    "log_level_option",
    "print_result",
    "shown_value",
]

#: What a listing prints when it has nothing to list.
EMPTY = "(empty)"

#: `--json` of every read command: the same data as one JSON document on stdout.
json_option = click.option(
    "--json", "as_json", is_flag=True, help="print JSON instead of lines (for scripts)"
)

#: `--log-level` of every long-running command.
log_level_option = click.option(
    "--log-level",
    "-l",
    "--loglevel",  # Celery's
    default="INFO",
    show_default=True,
    help="the lowest level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL",
)


def json_arg(value: str | None, kind: type, name: str) -> Any:
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


def echo_json(data: Any) -> None:
    """Print `data` (dataclasses, structs, datetimes, ...) as indented JSON."""
    encoded = msgspec.json.encode(data, enc_hook=repr)
    click.echo(msgspec.json.format(encoded, indent=2).decode())


def shown_value(value: Any) -> str:
    """A result or progress value as one line of JSON."""
    return json.dumps(value, default=str)


def print_result(result: TaskResult[Any]) -> None:
    """A finished task's status, result or error, and timing, one per line."""
    click.echo(f"status: {result.status}")
    if result.is_err:
        click.echo(f"error:  {result.error_type}: {result.error_message}")
    else:
        click.echo(f"result: {shown_value(result.return_value)}")
    click.echo(f"time:   {result.execution_time * 1000:.1f} ms, attempts {result.attempts}")


def confirmed(question: str, yes: bool) -> bool:
    """Ask `question` (default no) when stdin is a terminal and `--yes` was not given.

    Without a terminal (a script, CI, a pipe) nothing is asked and the command acts, as it did
    before the question existed; `--yes` makes that explicit.
    """
    if yes or not sys.stdin.isatty():
        return True
    return click.confirm(question, default=False, err=True)
