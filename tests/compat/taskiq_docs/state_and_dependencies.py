"""Taskiq's "State and dependencies" examples, in their `Annotated` form and their default
form; only the imports differ from Taskiq's docs."""

import random
from collections.abc import AsyncGenerator, Generator
from typing import Annotated, Generic, TypeVar

from conveyor.compat.taskiq import Context, InMemoryBroker, TaskiqDepends, TaskiqEvents, TaskiqState
from conveyor.compat.taskiq.depends.progress_tracker import ProgressTracker, TaskState

broker = InMemoryBroker()
events: list[str] = []


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    # Here we store a connection pool on startup for later use.
    state.pool = {"key": "value"}
    events.append("startup")


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
def shutdown(state: TaskiqState) -> None:
    state.pool.clear()
    events.append("shutdown")


@broker.task
async def get_val(key: str, context: Annotated[Context, TaskiqDepends()]) -> str | None:
    return context.state.pool.get(key)


@broker.task
async def get_val_default(key: str, context: Context = TaskiqDepends()) -> str | None:
    return context.state.pool.get(key)


def common_dep() -> int:
    return random.randint(1, 10)


def dep1(cd: Annotated[int, TaskiqDepends(common_dep)]) -> int:
    return cd + 1


def dep2(cd: Annotated[int, TaskiqDepends(common_dep)]) -> int:
    return cd + 2


def dep3(cd: Annotated[int, TaskiqDepends(common_dep, use_cache=False)]) -> int:
    return cd + 2


@broker.task
def tree(
    d1: Annotated[int, TaskiqDepends(dep1)], d2: Annotated[int, TaskiqDepends(dep2)]
) -> tuple[int, int]:
    return d1, d2


@broker.task
def no_cache(
    d1: Annotated[int, TaskiqDepends(dep1)], d3: Annotated[int, TaskiqDepends(dep3)]
) -> tuple[int, int]:
    return d1, d3


class MyDep:
    def __init__(self, dep1: Annotated[int, TaskiqDepends(dep1)]) -> None:
        self.value = dep1


@broker.task
async def class_dependency(dep: Annotated[MyDep, TaskiqDepends()]) -> int:
    return dep.value


T = TypeVar("T")


def default_dependency() -> int:
    return 1


class GenericDep(Generic[T]):
    def __init__(self, dep: Annotated[T, TaskiqDepends()]) -> None:
        self.dep = dep


class MyClassDep:
    def __init__(self, i: Annotated[int, TaskiqDepends(default_dependency)]) -> None:
        self.i = i


@broker.task
async def generics(dep: Annotated[GenericDep[MyClassDep], TaskiqDepends()]) -> int:
    assert isinstance(dep.dep, MyClassDep)
    return dep.dep.i


lifecycle: list[str] = []


def dependency() -> Generator[str, None, None]:
    lifecycle.append("startup")
    yield "value"
    lifecycle.append("shutdown")


async def async_dependency() -> AsyncGenerator[str, None]:
    lifecycle.append("async startup")
    yield "async value"
    lifecycle.append("async shutdown")


@broker.task
async def generators(
    dep: Annotated[str, TaskiqDepends(dependency)],
    adep: Annotated[str, TaskiqDepends(async_dependency)],
) -> str:
    return f"{dep.upper()} {adep.upper()}"


@broker.task
async def with_progress(progress: Annotated[ProgressTracker[str], TaskiqDepends()]) -> None:
    for i in range(3):
        await progress.set_progress(TaskState.STARTED, meta=f"{(i + 1) * 10}%")
