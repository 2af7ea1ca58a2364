"""The `conveyor` command: thin click commands that parse, call the library and print.

Every failure a user can cause (bad module path, unreachable broker, bad JSON) is one line on
stderr and exit code 2, never a traceback; `--traceback` (on any command) prints the whole
traceback instead of the line.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click

from conveyor.cli.commands import cli
from conveyor.errors import ConveyorError
from conveyor.logs import one_line

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyor` script and `python -m conveyor`."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        code = cli.main(args=args, prog_name="conveyor", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("conveyor: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 1 else exc.exit_code)
    except (ConveyorError, OSError, TypeError, ValueError) as exc:
        if "--traceback" in args:
            traceback.print_exception(exc)
        click.echo(f"conveyor: error: {one_line(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
