"""Finding the user's broker from `module:attribute`, and importing task modules."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from conveyor.broker import Broker
from conveyor.errors import ConfigurationError

__all__ = ["discover_task_modules", "load_broker"]

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

    Raises:
        ConfigurationError: one line saying what is missing.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = spec.partition(":")
    module = _import(module_name)
    target = getattr(module, attribute or "broker", None)
    if target is None:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attribute or 'broker'!r}"
        )
    if not isinstance(target, Broker):
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
        raise ConfigurationError(f"cannot import module {name!r}: {exc}") from None
    except Exception as exc:
        raise ConfigurationError(
            f"importing {name!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def discover_task_modules(root: Path, filename: str = "tasks.py") -> Iterator[str]:
    """Dotted names of every `tasks.py` under `root` (the CLI's `-fsd`)."""
    for path in sorted(root.rglob(filename)):
        relative = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        yield ".".join((*relative.parts[:-1], relative.stem))
