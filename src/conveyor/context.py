"""`Context` (what a running task can see and do) and `Depends` (dependency injection).

A task asks for the context with `context: Context = Depends()` and for any other dependency
with `Depends(func)`. Generator dependencies are cleaned up after the task, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_type_hints

from conveyor.message import TaskMessage

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["Context", "Dependency", "Depends", "dependency_params", "resolve_dependencies"]


class Context:
    """The running task's view of itself: its message, attempt and broker, and progress reports.

    Attributes:
        message: the message being run.
        broker: the broker that received it.
        attempt: 1 for the first run, 2 for the first retry, ...
        state: a dict middlewares and dependencies may share during one run.
    """

    def __init__(self, message: TaskMessage, broker: Broker) -> None:
        self.message = message
        self.broker = broker
        self.attempt = message.attempt
        self.state: dict[str, Any] = {}
        self._loop = asyncio.get_running_loop()

    @property
    def task_id(self) -> str:
        """The running task's id."""
        return self.message.task_id

    async def set_progress(self, progress: Any) -> None:
        """Publish a progress report that `TaskHandle.get_progress()` returns."""
        await self.broker.set_progress(self.message.task_id, progress)

    def set_progress_sync(self, progress: Any) -> None:
        """`set_progress` for sync tasks running in a worker thread."""
        coro = self.broker.set_progress(self.message.task_id, progress)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def Depends(dependency: Callable[..., Any] | None = None, *, use_cache: bool = True) -> Any:
    """Mark a parameter as injected: `Depends()` for its annotation, `Depends(func)` for func.

    `func` may be a sync or async function or generator; it may itself take `Depends`
    parameters and the `Context`. One run resolves each dependency once (`use_cache=True`).
    Typed `Any` so that `context: Context = Depends()` type-checks.
    """
    return Dependency(dependency, use_cache=use_cache)


class Dependency:
    """The marker `Depends(...)` returns: what to inject and whether to reuse it in a run."""

    __slots__ = ("dependency", "use_cache")

    def __init__(self, dependency: Callable[..., Any] | None = None, *, use_cache: bool = True):
        self.dependency = dependency
        self.use_cache = use_cache

    def __repr__(self) -> str:
        return f"Depends({getattr(self.dependency, '__name__', '')})"


def dependency_params(fn: Callable[..., Any]) -> dict[str, Dependency]:
    """Return the parameters of `fn` that are injected, with their `Depends` marker.

    A parameter annotated `Context` is injected even without `= Depends()`.
    """
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature take nothing injected
        return {}
    hints = _hints(fn)
    found: dict[str, Dependency] = {}
    for name, param in parameters.items():
        if isinstance(param.default, Dependency):
            marker = param.default
            if marker.dependency is None:
                marker = Dependency(hints.get(name), use_cache=marker.use_cache)
            found[name] = marker
        elif hints.get(name) is Context:
            found[name] = Dependency(Context)
    return found


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        target: Any = fn
        return get_type_hints(target.__init__ if isinstance(fn, type) else fn)
    except Exception:  # unresolvable forward references: fall back to no casting
        return {}


async def resolve_dependencies(
    params: dict[str, Dependency], context: Context, stack: contextlib.AsyncExitStack
) -> dict[str, Any]:
    """Resolve `params` for one run; generator cleanups are registered on `stack`."""
    cache: dict[Any, Any] = {Context: context}
    return {name: await _resolve(dep, context, stack, cache) for name, dep in params.items()}


async def _resolve(
    dep: Dependency, context: Context, stack: contextlib.AsyncExitStack, cache: dict[Any, Any]
) -> Any:
    func = dep.dependency
    if func is None:
        return None
    if dep.use_cache and func in cache:
        return cache[func]
    kwargs = await resolve_dependencies_inner(func, context, stack, cache)
    if inspect.isasyncgenfunction(func):
        value = await stack.enter_async_context(contextlib.asynccontextmanager(func)(**kwargs))
    elif inspect.isgeneratorfunction(func):
        value = stack.enter_context(contextlib.contextmanager(func)(**kwargs))
    else:
        value = func(**kwargs)
        if inspect.isawaitable(value):
            value = await value
    if dep.use_cache:
        cache[func] = value
    return value


async def resolve_dependencies_inner(
    func: Callable[..., Any],
    context: Context,
    stack: contextlib.AsyncExitStack,
    cache: dict[Any, Any],
) -> dict[str, Any]:
    """Resolve the injected parameters of a dependency function itself."""
    params = dependency_params(func)
    return {name: await _resolve(dep, context, stack, cache) for name, dep in params.items()}
