"""Taskiq's `taskiq worker` options on `conveyor worker`, so a Taskiq deployment's command line
runs with `taskiq` replaced by `conveyor`.

Each option conveyor has a meaning for is translated to it (`--max-threadpool-threads` is
`--max-threads`, `--wait-tasks-timeout` is `--shutdown-timeout`, `--use-process-pool` runs sync
tasks in processes, ...). The others are refused with one line saying why, rather than accepted
and ignored: a deployment should not believe a setting holds when it does not.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from conveyor.errors import ConfigurationError

__all__ = ["TaskiqWorkerOptions", "taskiq_worker_options"]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: Taskiq options conveyor refuses, with the reason, and the value it accepts if any.
_REFUSED: dict[str, tuple[str, object]] = {
    "receiver": ("conveyor's worker has no pluggable receiver: write a Middleware", None),
    "receiver_arg": ("conveyor's worker has no pluggable receiver: write a Middleware", ()),
    "no_propagate_errors": (
        "a task's exception always reaches its generator dependencies (so they can roll back),"
        " and the task fails whatever they do",
        False,
    ),
    "max_prefetch": (
        "conveyor takes messages only up to its free capacity (--max-async-tasks), nothing beyond",
        0,
    ),
    "ack_type": (
        "conveyor acknowledges a message once its result is stored (at least once);"
        " only when_saved is that",
        "when_saved",
    ),
    "hardkill_count": ("the second SIGINT/SIGTERM stops a conveyor worker at once", 2),
}


@dataclass
class TaskiqWorkerOptions:
    """The Taskiq options given, as conveyor's settings."""

    app_dir: str | None = None
    tasks_pattern: tuple[str, ...] = ()
    max_threadpool_threads: int | None = None
    wait_tasks_timeout: float | None = None
    reload_dirs: tuple[str, ...] = ()
    use_process_pool: bool = False
    max_process_pool_processes: int | None = None
    no_parse: bool = False
    configure_logging: bool = True
    max_fails: int = -1
    refused: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse, in one line, a Taskiq option that has no meaning here.

        Raises:
            ConfigurationError: naming the option and why (one line, exit code 2).
        """
        for name, value in self.refused.items():
            reason, accepted = _REFUSED[name]
            if value != accepted and value not in (None, ()):
                option = "--receiver_arg" if name == "receiver_arg" else _flag(name)
                shown = "" if value is True else f" {value!r}"
                raise ConfigurationError(f"{option}{shown} has no conveyor form: {reason}")

    def prepare(self) -> None:
        """Make `--app-dir` importable (before the app is imported)."""
        if self.app_dir is not None:
            sys.path.insert(0, os.path.abspath(self.app_dir))

    def root(self) -> Path | None:
        """Where `-fsd` looks: the `--app-dir`, else the current directory."""
        return None if self.app_dir is None else Path(self.app_dir)

    def patterns(self) -> tuple[str, ...]:
        """The `-fsd` globs (`**/tasks.py` unless `--tasks-pattern` gives others)."""
        return self.tasks_pattern or ("**/tasks.py",)

    def worker_options(self) -> dict[str, Any]:
        """The worker options these set (conveyor's names)."""
        options: dict[str, Any] = {}
        if self.use_process_pool:
            options["sync_executor"] = "process"
        if self.max_process_pool_processes is not None:
            options["max_processes"] = self.max_process_pool_processes
        return options

    def reload_paths(self) -> list[Path]:
        """The directories `--reload` watches (the current one unless `--reload-dir` given)."""
        return [Path(d) for d in self.reload_dirs] or [Path.cwd()]

    def child_argv(self) -> list[str]:
        """These options again, for the worker processes a supervisor starts."""
        argv: list[str] = []
        if self.app_dir is not None:
            argv += ["--app-dir", self.app_dir]
        for pattern in self.tasks_pattern:
            argv += ["--tasks-pattern", pattern]
        argv += ["--use-process-pool"] if self.use_process_pool else []
        if self.max_process_pool_processes is not None:
            argv += ["--max-process-pool-processes", str(self.max_process_pool_processes)]
        argv += ["--no-parse"] if self.no_parse else []
        argv += [] if self.configure_logging else ["--no-configure-logging"]
        return argv

    def custom_format(self, log_format: str) -> None:
        """A `--log-format` other than text/json is Taskiq's: a logging format string."""
        if log_format not in ("text", "json") and self.configure_logging:
            for handler in logging.getLogger().handlers:
                handler.setFormatter(logging.Formatter(log_format))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_OPTIONS: list[Decorator] = [
    click.option("--app-dir", "-d", help="Taskiq's: a directory to import the app and tasks from"),
    click.option(
        "--tasks-pattern",
        "-tp",
        multiple=True,
        help="Taskiq's: a glob of task modules for -fsd (repeatable)",
    ),
    click.option(
        "--max-threadpool-threads", type=click.IntRange(1), help="Taskiq's name of --max-threads"
    ),
    click.option(
        "--wait-tasks-timeout",
        type=click.FloatRange(0),
        help="Taskiq's name of --shutdown-timeout",
    ),
    click.option("--reload-dir", "reload_dirs", multiple=True, help="a directory --reload watches"),
    click.option(
        "--do-not-use-gitignore",
        is_flag=True,
        expose_value=False,
        help="Taskiq's; --reload watches .py files only, never reading .gitignore",
    ),
    click.option("--use-process-pool", is_flag=True, help="run sync tasks in a process pool"),
    click.option(
        "--max-process-pool-processes", type=click.IntRange(1), help="the process pool's size"
    ),
    click.option("--no-parse", is_flag=True, help="do not cast arguments to the annotations"),
    click.option(
        "--no-configure-logging",
        "configure_logging",
        flag_value=False,
        default=True,
        help="leave logging as the app set it up",
    ),
    click.option(
        "--max-fails",
        type=int,
        default=-1,
        help="with --workers: stop after this many worker deaths (-1: never)",
    ),
    click.option("--receiver", hidden=True),
    click.option("--receiver_arg", "receiver_arg", multiple=True, hidden=True),
    click.option("--no-propagate-errors", is_flag=True, default=None, hidden=True),
    click.option("--max-prefetch", type=int, hidden=True),
    click.option("--ack-type", hidden=True),
    click.option("--hardkill-count", type=int, hidden=True),
]


def taskiq_worker_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add Taskiq's worker options to a click command function (below `@cli.command()`); the
    function gets them as one `taskiq` keyword, a `TaskiqWorkerOptions`."""
    names = {f.name for f in dataclasses.fields(TaskiqWorkerOptions) if f.name != "refused"}

    @functools.wraps(command)
    def with_taskiq(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in [*names, *_REFUSED] if name in kwargs}
        options = TaskiqWorkerOptions(
            **{k: v for k, v in given.items() if k in names and v is not None},
            refused={k: v for k, v in given.items() if k in _REFUSED},
        )
        return command(taskiq=options, **kwargs)

    decorated: Callable[..., Any] = with_taskiq
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated
