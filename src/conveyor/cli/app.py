"""Finding the user's broker from `module:attribute`, importing task modules, and running a
command's work against the broker.

An error while importing the user's module names the file and line it happened at (the
deepest frame in the user's own files); `--traceback` shows the whole traceback instead.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import conveyor
from conveyor.broker import Broker
from conveyor.errors import ConfigurationError
from conveyor.task import Task

__all__ = ["discover_task_modules", "load_broker", "load_target", "run_with"]

T = TypeVar("T")
#: Where the user's code is not: the standard library, installed packages and conveyor itself.
_NOT_USER = tuple(
    {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(conveyor.__file__).parent)}
)

#: What `-fsd` imports: every `tasks.py` below the current directory.
TASKS_PATTERNS = ("**/tasks.py",)

_SKIP_DIRS = {
    ".venv",
    "venv",
    "env",
    "node_modules",
    "site-packages",
    "__pycache__",
    "build",
    "dist",
}


def load_broker(
    spec: str,
    modules: Iterable[str] = (),
    discover: bool = False,
    patterns: Sequence[str] = TASKS_PATTERNS,
    root: Path | None = None,
) -> Broker:
    """Import `module:attribute` (attribute defaults to `broker`) and the task modules.

    The attribute may also be an app object with a `broker` (a `Scheduler`, Taskiq's
    `TaskiqScheduler`, QTasks' `QueueTasks`): its broker is returned.

    Raises:
        ConfigurationError: one line saying what is missing.
    """
    target = load_target(spec, modules, discover, patterns, root)
    return target if isinstance(target, Broker) else target.broker


def load_target(
    spec: str,
    modules: Iterable[str] = (),
    discover: bool = False,
    patterns: Sequence[str] = TASKS_PATTERNS,
    root: Path | None = None,
) -> Any:
    """`load_broker`'s object itself: a broker, or an object with a `broker` attribute; with
    `discover`, the modules `patterns` find below `root` (the current directory) are imported
    too."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = spec.partition(":")
    module = _import(module_name)
    target = getattr(module, attribute or "broker", None)
    if target is None:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attribute or 'broker'!r}"
        )
    if not isinstance(target, Broker) and not _has_broker(target):
        raise ConfigurationError(
            f"{spec!r} is not a conveyor broker (it is {type(target).__name__!r})"
        )
    for name in modules:
        _import(name)
    if discover:
        for name in discover_task_modules(root or Path.cwd(), patterns):
            _import(name)
    return target


def _has_broker(target: object) -> bool:
    """An app object that holds a broker (a `Scheduler`, QTasks' `QueueTasks`), not a task."""
    return not isinstance(target, Task) and isinstance(getattr(target, "broker", None), Broker)


def _import(name: str) -> object:
    if not name:
        raise ConfigurationError("give the broker as module:attribute, e.g. app.tasks:broker")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigurationError(f"cannot import module {name!r}: no such module") from None
        raise ConfigurationError(f"cannot import module {name!r}: {exc}{_where(exc)}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"importing {name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc


def _where(exc: BaseException) -> str:
    """` (file.py, line N; ...)`: the deepest frame of `exc` in the user's own files (a syntax
    error's message names it already), and where the rest is."""
    rest = "--traceback shows the rest"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<", *_NOT_USER))
    ]
    if isinstance(exc, SyntaxError) or not frames:
        return f" ({rest})"
    path = Path(frames[-1].filename)
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return f" ({path}, line {frames[-1].lineno}; {rest})"


def run_with(broker: Broker, work: Callable[[], Awaitable[T]]) -> T:
    """Run a command's `work` in a new event loop, shutting the broker down after it."""

    async def main() -> T:
        try:
            return await work()
        finally:
            await broker.shutdown()

    return asyncio.run(main())


def discover_task_modules(root: Path, patterns: Sequence[str] = TASKS_PATTERNS) -> Iterator[str]:
    """Dotted names of the modules under `root` that match the glob `patterns` (the CLI's
    `-fsd`; Taskiq's `--tasks-pattern`), every `tasks.py` by default."""
    found = {path for pattern in patterns for path in root.glob(pattern) if path.suffix == ".py"}
    for path in sorted(found):
        relative = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        yield ".".join((*relative.parts[:-1], relative.stem))
