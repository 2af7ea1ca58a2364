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
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import conveyor
from conveyor.broker import Broker
from conveyor.errors import ConfigurationError

__all__ = ["discover_task_modules", "load_broker", "load_target", "run_with"]

T = TypeVar("T")
#: Where the user's code is not: the standard library, installed packages and conveyor itself.
_NOT_USER = tuple(
    {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(conveyor.__file__).parent)}
)

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


def load_broker(spec: str, modules: Iterable[str] = (), discover: bool = False) -> Broker:
    """Import `module:attribute` (attribute defaults to `broker`) and the task modules.

    The attribute may also be an object with a `broker` (a `Scheduler`, Taskiq's
    `TaskiqScheduler`): its broker is returned.

    Raises:
        ConfigurationError: one line saying what is missing.
    """
    target = load_target(spec, modules, discover)
    return target if isinstance(target, Broker) else target.broker


def load_target(spec: str, modules: Iterable[str] = (), discover: bool = False) -> Any:
    """`load_broker`'s object itself: a broker, or an object with a `broker` attribute."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = spec.partition(":")
    module = _import(module_name)
    target = getattr(module, attribute or "broker", None)
    if target is None:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attribute or 'broker'!r}"
        )
    if not isinstance(target, Broker) and not isinstance(getattr(target, "broker", None), Broker):
        raise ConfigurationError(
            f"{spec!r} is not a conveyor broker (it is {type(target).__name__!r})"
        )
    for name in modules:
        _import(name)
    if discover:
        for name in discover_task_modules(Path.cwd()):
            _import(name)
    return target


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


def discover_task_modules(root: Path, filename: str = "tasks.py") -> Iterator[str]:
    """Dotted names of every `tasks.py` under `root` (the CLI's `-fsd`)."""
    for path in sorted(root.rglob(filename)):
        relative = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        yield ".".join((*relative.parts[:-1], relative.stem))
