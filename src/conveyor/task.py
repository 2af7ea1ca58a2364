"""`Task[P, R]`: a registered function that runs locally when called and remotely with `kiq`.

`R` is what the caller gets back: the return type of a plain or async function, or `list[Y]`
for a generator of `Y`. `kiq` takes exactly the function's parameters (PEP 612).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from conveyor.context import Dependency, dependency_params
from conveyor.errors import ConfigurationError, SerializationError
from conveyor.kicker import Kicker
from conveyor.result import TaskHandle
from conveyor.schedules import Cron, Schedule, ScheduleEntry
from conveyor.serializers import ArgumentTypes, Serializer, check_cast

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from conveyor.broker import Broker
    from conveyor.portal import SyncTaskHandle
    from conveyor.workflows import Chain, Group, Workflow

__all__ = [
    "AsyncGenTask",
    "AsyncTask",
    "GenTask",
    "Signature",
    "SyncTask",
    "Task",
    "TaskDecorator",
    "default_task_name",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
A = TypeVar("A")
S = TypeVar("S")
#: Parameter kinds that take one argument (a `*args` or `**kwargs` collects many).
_ONE = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
)
Y = TypeVar("Y")
R_co = TypeVar("R_co", covariant=True)
S_co = TypeVar("S_co", covariant=True)


class Schedules(Protocol[S_co]):
    """Where `schedule_by_*` store a schedule: a `conveyor.Scheduler` (which returns the
    schedule's id), or a Taskiq schedule source of `conveyor.compat.taskiq`."""

    async def add(
        self, signature: Signature[Any], schedule: Schedule, *, schedule_id: str | None = None
    ) -> S_co:
        """Store a schedule of `signature` (under `schedule_id`, else a new id)."""
        ...


class Signature(Generic[R_co]):
    """A task call frozen for later: for `broker.kiq_many` and workflows (Celery's `.s()`).

    Attributes:
        task_name: the task to run.
        args / kwargs: its arguments.
        labels: per-call labels.
        immutable: True for `.si()`: it ignores the result of a previous workflow step.
    """

    __slots__ = ("args", "immutable", "kwargs", "labels", "task", "task_name")

    def __init__(
        self,
        task_name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        labels: dict[str, Any] | None = None,
        immutable: bool = False,
        task: Task[Any, R_co] | None = None,
    ) -> None:
        self.task_name = task_name
        self.args = args
        self.kwargs = kwargs or {}
        self.labels = labels or {}
        self.immutable = immutable
        self.task = task

    def __repr__(self) -> str:
        return f"{self.task_name}.s(*{self.args!r}, **{self.kwargs!r})"

    def __or__(self, other: Signature[Any] | Workflow) -> Chain:
        """`a.s() | b.s()`: the chain of both (Celery's `|`)."""
        from conveyor.workflows import Chain  # workflows build on signatures: imported here

        return Chain(self, other)

    async def kiq(self) -> TaskHandle[R_co]:
        """Send this call now (Celery's `sig.delay()` / `apply_async()`).

        Raises:
            ConfigurationError: the signature was made by name, not from a task.
        """
        if self.task is None:
            raise ConfigurationError(f"{self.task_name}: send it with broker.kiq_by_name")
        return await self.task.kicker().with_labels(**self.labels).kiq(*self.args, **self.kwargs)

    def with_labels(self, **labels: Any) -> Signature[R_co]:
        """Return a copy with more labels."""
        return Signature(
            self.task_name,
            self.args,
            self.kwargs,
            labels={**self.labels, **labels},
            immutable=self.immutable,
            task=self.task,
        )


class Task(Generic[P, R]):
    """A function registered on a broker under `name`, with its default `labels`."""

    def __init__(
        self,
        broker: Broker,
        fn: Callable[P, Any],
        name: str,
        labels: dict[str, Any],
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self.broker = broker
        self.fn = fn
        self.name = name
        self.labels = labels
        self.retry_on = retry_on
        self.schedules: list[ScheduleEntry] = []  # from the `schedule` label
        self.is_async_gen = inspect.isasyncgenfunction(fn)
        self.is_gen = inspect.isgeneratorfunction(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.dependencies: dict[str, Dependency] = dependency_params(fn)
        signature = inspect.signature(fn)
        self.call_signature = signature.replace(
            parameters=[p for n, p in signature.parameters.items() if n not in self.dependencies]
        )
        params = self.call_signature.parameters.values()
        plain = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        #: The parameter names, in order, when each may be given by position or by name.
        self.plain_params: tuple[str, ...] | None = tuple(p.name for p in params) if plain else None
        hints = _type_hints(fn)
        self.arg_types: dict[str, Any] = {
            n: hints[n] for n in self.call_signature.parameters if n in hints
        }
        #: The annotations a sent argument is checked against (`check_types`): computed once.
        self.checked_types: dict[str, Any] = {
            n: t
            for n, t in self.arg_types.items()
            if t is not Any and t is not object and self.call_signature.parameters[n].kind in _ONE
        }
        #: The annotations of `plain_params` in order, when each is a class (`check_types`'s fast
        #: path); else None.
        self._exact_types: tuple[type, ...] | None = None
        if self.plain_params is not None:
            hinted = [self.checked_types.get(n) for n in self.plain_params]
            if all(isinstance(t, type) for t in hinted):
                self._exact_types = tuple(t for t in hinted if isinstance(t, type))
        self.return_type = _result_type(hints.get("return", Any), self.is_gen or self.is_async_gen)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @property
    def task_name(self) -> str:
        """The registered name (Taskiq's spelling of `name`)."""
        return self.name

    @property
    def original_func(self) -> Callable[P, Any]:
        """The decorated function (Taskiq's spelling of `fn`)."""
        return self.fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here and now, as if it were not a task."""
        return self.fn(*args, **kwargs)

    def fits_exactly(self, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        """True when `args` and `kwargs` give every parameter once, each by position or name:
        the common call, checked without `inspect` (a per-call cost on the send path)."""
        names = self.plain_params
        return (
            names is not None
            and len(args) + len(kwargs) == len(names)
            and all(name in kwargs for name in names[len(args) :])
        )

    def check_types(
        self, args: Sequence[Any], kwargs: dict[str, Any], serializer: Serializer
    ) -> None:
        """Check that each argument will cast to its annotation in the worker, as it arrives
        there through `serializer` (the arguments already fit the signature).

        Cheap on the send path: when every value is given by position and of exactly its
        annotated class (the common call) it costs one tuple comparison; else one
        `msgspec.convert` of all of them into a Struct made once per task. Only a call that
        fails that is looked at argument by argument, through the serializer as the worker
        sees it, to name the argument (or accept a value encoding changes into a fit).

        Raises:
            TypeError: an argument does not fit its annotation, naming the task and argument.
        """
        exact = self._exact_types
        if exact is not None and not kwargs and tuple(map(type, args)) == exact:
            return  # the common call: every value of exactly its annotated class
        named: dict[str, Any]
        if self.plain_params is not None:
            named = dict(zip(self.plain_params, args, strict=False))
            named.update(kwargs)
        else:
            named = self.call_signature.bind(*args, **kwargs).arguments
        if self._argument_types.fit(named):
            return
        for name, value in named.items():  # which one, and is it refused after encoding too?
            annotation = self.checked_types.get(name)
            if annotation is None or type(value) is annotation:
                continue
            try:
                check_cast(value, annotation, serializer)
            except SerializationError as exc:
                raise TypeError(f"{self.name}: argument {name!r}: {exc}") from None

    @functools.cached_property
    def _argument_types(self) -> ArgumentTypes:
        """`checked_types` as one msgspec type, made on the first send that needs it."""
        return ArgumentTypes(self.checked_types)

    def kicker(self) -> Kicker[P, R]:
        """Return a builder for one send with per-call options (labels, id, delay, broker)."""
        return Kicker(self)

    async def kiq(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Send the task to its broker and return a handle to its result.

        Raises:
            TypeError: the arguments do not fit the signature or cannot be serialized.
            BrokerError: the broker cannot be reached.
        """
        return await self.broker.send_task(self, args, kwargs)

    def kiq_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncTaskHandle[R]:
        """`kiq` for synchronous code (Flask, Django, scripts); returns a blocking handle."""
        return self.kicker().kiq_sync(*args, **kwargs)

    @overload
    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]: ...
    @overload
    def s(
        self: Task[Concatenate[A, P2], R], *args: P2.args, **kwargs: P2.kwargs
    ) -> Signature[R]: ...

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this call; in a chain it receives the previous result first.

        Type checkers hold it to the function's parameters as `kiq`, or to all of them but the
        first (which a previous workflow step's result fills).
        """
        return Signature(self.name, args, kwargs, task=self)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature: in a chain it ignores the previous result, so it is the
        whole call (typed as `kiq`)."""
        return Signature(self.name, args, kwargs, immutable=True, task=self)

    def starmap(self, calls: Iterable[Sequence[Any]]) -> Group:
        """A group of one call per argument tuple (Celery's `starmap`): results in order."""
        from conveyor.workflows import Group  # workflows build on signatures: imported here

        return Group([Signature(self.name, tuple(args), task=self) for args in calls])

    async def schedule_by_cron(
        self, scheduler: Schedules[S], cron: str | Cron, *args: P.args, **kwargs: P.kwargs
    ) -> S:
        """Store a schedule sending this call at every time of `cron` (a `Cron` sets a `tz`).

        Returns:
            What the scheduler gives back: the schedule's id, for `scheduler.remove`.

        Raises:
            ConfigurationError: a bad cron expression or time zone.
        """
        return await self.kicker().schedule_by_cron(scheduler, cron, *args, **kwargs)

    async def schedule_by_interval(
        self,
        scheduler: Schedules[S],
        seconds: float | timedelta,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> S:
        """Store a schedule sending this call every `seconds`, the first in `seconds`."""
        return await self.kicker().schedule_by_interval(scheduler, seconds, *args, **kwargs)

    async def schedule_by_time(
        self, scheduler: Schedules[S], when: datetime, *args: P.args, **kwargs: P.kwargs
    ) -> S:
        """Store a one-off run of this call at `when` (a naive datetime is local time)."""
        return await self.kicker().schedule_by_time(scheduler, when, *args, **kwargs)


class AsyncTask(Task[P, R]):
    """A task made from an `async def` returning `R`; calling it returns a coroutine."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...


class SyncTask(Task[P, R]):
    """A task made from a plain function; workers run it in a thread (or process) pool."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...


class AsyncGenTask(Task[P, list[Y]], Generic[P, Y]):
    """A task made from an async generator: items stream to `handle.stream()`."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Y]: ...


class GenTask(Task[P, list[Y]], Generic[P, Y]):
    """A task made from a generator: items stream to `handle.stream()`."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[Y]: ...


def task_class(fn: Callable[..., Any]) -> type[Task[Any, Any]]:
    """The `Task` subclass matching the kind of function."""
    if inspect.isasyncgenfunction(fn):
        return AsyncGenTask
    if inspect.isgeneratorfunction(fn):
        return GenTask
    if inspect.iscoroutinefunction(fn):
        return AsyncTask
    return SyncTask


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # unresolvable forward references: no casting, not an error
        return {}


def _result_type(hint: Any, generator: bool) -> Any:
    if not generator:
        return hint
    if get_origin(hint) is None:
        return list[Any]
    item = get_args(hint)[0] if get_args(hint) else Any
    return list[item]  # type: ignore[valid-type]  # built at runtime from the annotation


class TaskDecorator(Protocol):
    """What `broker.task(...)` returns when given options: it takes the function."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...  # type: ignore[overload-overlap]  # first match wins
    @overload
    def __call__(self, fn: Callable[P, AsyncIterator[Y]], /) -> AsyncGenTask[P, Y]: ...  # type: ignore[overload-overlap]  # first match wins
    @overload
    def __call__(self, fn: Callable[P, Iterator[Y]], /) -> GenTask[P, Y]: ...  # type: ignore[overload-overlap]  # first match wins
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTask[P, R]: ...


def default_task_name(fn: Callable[..., Any]) -> str:
    """`module:qualname`, with `__main__` replaced by the script's importable module name."""
    module = fn.__module__
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif getattr(main, "__file__", None):
            module = Path(str(main.__file__)).stem  # type: ignore[union-attr]
    return f"{module}:{fn.__qualname__}"
