"""`Context` (what a running task can see and do) and `Depends` (dependency injection).

A task asks for the context with `context: Context = Depends()` and for any other dependency
with `Depends(func)`, as a default or in `Annotated[T, Depends(func)]`; `Depends()` with no
function injects the annotated type (a class is built with its own `__init__` dependencies, a
generic one such as `Repo[User]` with its type variables filled in). Generator dependencies are
cleaned up after the task, last entered first, whatever its outcome; each sees the task's
exception at its `yield` (to roll back, say), and none can turn a failure into a success.

What a dependency resolves to can be given by the broker: `broker.add_dependency_context({T:
value})` makes every `Depends()` of `T` get `value`, and `broker.dependency_overrides[func] =
other` calls `other` wherever `func` was asked for (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, get_args, get_origin

from conveyor.errors import Reject, Requeue
from conveyor.message import TaskMessage

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = [
    "Cleanups",
    "Context",
    "Dependency",
    "Depends",
    "dependency_params",
    "resolve_dependencies",
]


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
        self.state: Any = {}
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

    async def requeue(self) -> NoReturn:
        """Stop here and put the message back on its queue, to run again as if it had not run
        (no result, no attempt counted)."""
        raise Requeue()

    def reject(self, reason: str = "rejected by the task") -> NoReturn:
        """Stop here, fail the task and move its message to the dead-letter queue."""
        raise Reject(reason)


def Depends(
    dependency: Callable[..., Any] | None = None,
    *,
    use_cache: bool = True,
    kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """Mark a parameter as injected: `Depends()` for its annotation, `Depends(func)` for func.

    `func` may be a sync or async function or generator, or a class; it may itself take
    `Depends` parameters and the `Context`. One run resolves each dependency once
    (`use_cache=True`). `kwargs` are passed to `func` as they are. Use it as the parameter's
    default or inside `Annotated[T, Depends(...)]`; typed `Any` so that
    `context: Context = Depends()` type-checks.
    """
    return Dependency(dependency, use_cache=use_cache, kwargs=kwargs)


class Dependency:
    """The marker `Depends(...)` returns: what to inject, its fixed keyword arguments, and
    whether to reuse it within a run."""

    __slots__ = ("dependency", "kwargs", "use_cache")

    def __init__(
        self,
        dependency: Callable[..., Any] | None = None,
        *,
        use_cache: bool = True,
        kwargs: Mapping[str, Any] | None = None,
    ):
        self.dependency = dependency
        self.use_cache = use_cache
        self.kwargs = dict(kwargs or {})

    def __repr__(self) -> str:
        return f"Depends({getattr(self.dependency, '__name__', '')})"

    def aimed_at(self, annotation: Any) -> Dependency:
        """This marker, or for `Depends()` one aimed at `annotation`."""
        if self.dependency is not None:
            return self
        return Dependency(annotation, use_cache=self.use_cache, kwargs=self.kwargs)


def dependency_params(fn: Callable[..., Any]) -> dict[str, Dependency]:
    """Return the parameters of `fn` that are injected, with their `Depends` marker.

    A parameter is injected when its default is `Depends(...)`, when its annotation is
    `Annotated[T, Depends(...)]`, or when it is annotated `Context` (or a subclass).
    """
    target = _constructor(fn)
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature take nothing injected
        return {}
    hints = _hints(fn)
    found: dict[str, Dependency] = {}
    for name, param in parameters.items():
        annotation, marker = _split_annotated(hints.get(name))
        if isinstance(param.default, Dependency):
            marker = param.default
        if marker is not None:
            found[name] = marker.aimed_at(annotation)
        elif isinstance(annotation, type) and issubclass(annotation, Context):
            found[name] = Dependency(annotation)
    return found


def _constructor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What to read the parameters of: the class of a generic alias (`Repo[User]`)."""
    origin = get_origin(fn)
    return origin if isinstance(origin, type) else fn


def _split_annotated(hint: Any) -> tuple[Any, Dependency | None]:
    """`Annotated[T, Depends(f)]` -> (T, the marker); any other hint -> (hint, None)."""
    if get_origin(hint) is not Annotated:
        return hint, None
    inner, *metadata = get_args(hint)
    markers = [item for item in metadata if isinstance(item, Dependency)]
    return inner, (markers[-1] if markers else None)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of `fn`'s parameters (of `__init__` for a class), with the type
    variables of a generic alias replaced by its arguments."""
    target: Any = _constructor(fn)
    annotated = _init_of(target) if isinstance(target, type) else target
    try:
        hints = inspect.get_annotations(annotated, eval_str=True)
    except Exception:  # unresolvable forward references: fall back to no casting
        return {}
    typevars = dict(zip(getattr(target, "__parameters__", ()), get_args(fn), strict=False))
    if not typevars:
        return hints
    return {name: _substitute(hint, typevars) for name, hint in hints.items()}


def _init_of(cls: type) -> Any:
    """The `__init__` a class uses: the first one defined up its MRO."""
    return next(vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c))


def _substitute(hint: Any, typevars: dict[Any, Any]) -> Any:
    if isinstance(hint, TypeVar):
        return typevars.get(hint, hint)
    if get_origin(hint) is Annotated:
        inner, *metadata = get_args(hint)
        return Annotated[(_substitute(inner, typevars), *metadata)]
    return hint


class Cleanups:
    """The generator dependencies one run entered, to close after it."""

    def __init__(self) -> None:
        self._exits: list[Callable[..., Any]] = []

    async def enter(self, manager: Any) -> Any:
        """Enter a sync or async context manager; its exit runs at `close`."""
        if hasattr(manager, "__aenter__"):
            value = await manager.__aenter__()
        else:
            value = manager.__enter__()
        self._exits.append(getattr(manager, "__aexit__", None) or manager.__exit__)
        return value

    async def close(self, error: BaseException | None) -> None:
        """Exit every entered manager, last first, each with `error` (the run's, or None).

        Whether one of them swallows `error` changes nothing for the others or for the run.

        Raises:
            BaseException: the first exception a cleanup raised, other than `error` itself.
        """
        failure: BaseException | None = None
        args = (None, None, None) if error is None else (type(error), error, error.__traceback__)
        exits, self._exits = self._exits, []
        for exit_ in reversed(exits):
            try:
                outcome = exit_(*args)
                if inspect.isawaitable(outcome):
                    await outcome
            except BaseException as exc:
                if exc is not error and failure is None:
                    failure = exc
        if failure is not None:
            raise failure


async def resolve_dependencies(
    params: dict[str, Dependency], context: Context, cleanups: Cleanups
) -> dict[str, Any]:
    """Resolve `params` for one run; generator dependencies are entered on `cleanups`.

    The context, and what the broker's dependency context gives, are resolved first.
    """
    broker = context.broker
    given: dict[Any, Any] = {**broker.dependency_context, Context: context}
    given[type(context)] = context
    resolver = _Resolver(cleanups, given, broker.dependency_overrides)
    return {name: await resolver.resolve(dep) for name, dep in params.items()}


class _Resolver:
    """One run's resolution: values given up front, overrides, and the per-run cache."""

    def __init__(
        self,
        cleanups: Cleanups,
        given: dict[Any, Any],
        overrides: Mapping[Any, Callable[..., Any]],
    ) -> None:
        self.cleanups = cleanups
        self.given = given
        self.overrides = overrides
        self.cache: dict[Any, Any] = {}

    async def resolve(self, dep: Dependency) -> Any:
        key = dep.dependency
        if key is None:
            return None
        if key in self.given:
            return self.given[key]
        if dep.use_cache and key in self.cache:
            return self.cache[key]
        func = self.overrides.get(key, key)
        kwargs = {name: await self.resolve(d) for name, d in dependency_params(func).items()}
        value = await self._call(func, {**kwargs, **dep.kwargs})
        if dep.use_cache:
            self.cache[key] = value
        return value

    async def _call(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if inspect.isasyncgenfunction(func):
            return await self.cleanups.enter(contextlib.asynccontextmanager(func)(**kwargs))
        if inspect.isgeneratorfunction(func):
            return await self.cleanups.enter(contextlib.contextmanager(func)(**kwargs))
        value = func(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value
