"""The `conveyor` command: thin click commands that parse, call the library and print.

Every failure a user can cause (bad module path, unreachable broker, bad JSON) is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from conveyor.cli.commands import cli
from conveyor.errors import ConveyorError

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyor` script and `python -m conveyor`."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="conveyor",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("conveyor: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 1 else exc.exit_code)
    except (ConveyorError, OSError, TypeError, ValueError) as exc:
        click.echo(f"conveyor: error: {one_line(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
