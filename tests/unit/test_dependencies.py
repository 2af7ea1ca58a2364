"""Dependency injection: a failure stays a failure whatever a generator dependency does with it,
the `Annotated[T, Depends()]` form, generic dependency classes, the broker's dependency context
and overrides, and `Context.requeue()` / `reject()`.

No `from __future__ import annotations` here: the dependencies are classes local to the tests,
which a string annotation could not name.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Generic, TypeVar

import pytest

from conveyor import Context, Depends, InMemoryBroker, TaskStatus

T = TypeVar("T")


class Rollback(Exception):
    """The task's own failure in these tests."""


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    running = InMemoryBroker(await_inplace=True)
    yield running
    await running.shutdown()


@pytest.mark.parametrize("returns", ["annotated", "plain"])
async def test_a_generator_dependency_that_swallows_the_error_does_not_make_a_success(
    broker: InMemoryBroker, returns: str
) -> None:
    rolled_back: list[str] = []

    async def session() -> AsyncIterator[str]:
        try:
            yield "session"
        except Exception as exc:  # the usual "roll back" pattern, without re-raising
            rolled_back.append(type(exc).__name__)

    def sync_session() -> Iterator[str]:
        try:
            yield "sync"
        except Exception:
            rolled_back.append("sync")

    async def annotated(s: str = Depends(session), t: str = Depends(sync_session)) -> int:
        raise Rollback("insert failed")

    async def plain(s: str = Depends(session), t: str = Depends(sync_session)):  # type: ignore[no-untyped-def]  # the unannotated form of the report
        raise Rollback("insert failed")

    task = broker.register_task(annotated if returns == "annotated" else plain, "save")
    result = await (await task.kiq()).wait_result(timeout=5)
    assert result.status is TaskStatus.FAILED
    assert result.error_type == "Rollback"
    assert sorted(rolled_back) == ["Rollback", "sync"]


async def test_annotated_dependencies_and_generic_classes(broker: InMemoryBroker) -> None:
    def one() -> int:
        return 1

    class Box(Generic[T]):
        def __init__(self, item: Annotated[T, Depends()]) -> None:
            self.item = item

    class Counter:
        def __init__(self, start: Annotated[int, Depends(one)]) -> None:
            self.start = start

    @broker.task
    async def count(
        n: int,
        box: Annotated[Box[Counter], Depends()],
        context: Annotated[Context, Depends()],
        extra: Annotated[int, Depends(lambda x: x * 10, kwargs={"x": 4})],
    ) -> int:
        return n + box.item.start + context.attempt + extra

    # The injected parameters are not part of the call, which a type checker cannot know.
    handle = await count.kiq(100)  # type: ignore[call-arg]
    assert (await handle.wait_result(timeout=5)).return_value == 142


async def test_dependency_context_and_overrides(broker: InMemoryBroker) -> None:
    class Settings:
        def __init__(self, dsn: str = "postgres://prod") -> None:
            self.dsn = dsn

    def get_client() -> str:
        return "real client"

    @broker.task
    async def show(
        settings: Annotated[Settings, Depends()], client: str = Depends(get_client)
    ) -> str:
        return f"{settings.dsn} {client}"

    first = await show.kiq()  # type: ignore[call-arg]  # `settings` is injected
    assert (await first.wait_result(5)).return_value == "postgres://prod real client"
    broker.add_dependency_context({Settings: Settings("sqlite://test")})
    broker.dependency_overrides[get_client] = lambda: "fake client"
    second = await show.kiq()  # type: ignore[call-arg]  # `settings` is injected
    assert (await second.wait_result(5)).return_value == "sqlite://test fake client"


async def test_context_requeue_runs_the_task_again_and_reject_dead_letters() -> None:
    broker = InMemoryBroker()
    runs: list[int] = []

    @broker.task
    async def once_more(context: Context = Depends()) -> int:
        runs.append(context.attempt)
        if context.message.labels.get("requeued", 0) < 2:
            await context.requeue()
        return len(runs)

    @broker.task
    async def refuse(context: Context = Depends()) -> None:
        context.reject("not for us")

    requeued = await (await once_more.kiq()).wait_result(timeout=5)
    rejected = await (await refuse.kiq()).wait_result(timeout=5)
    letters = await broker.transport.dead_letters(10)
    await broker.shutdown()
    assert (requeued.return_value, requeued.attempts, runs) == (3, 1, [1, 1, 1])
    assert rejected.status is TaskStatus.FAILED
    assert [letter.task_id for letter in letters] == [rejected.task_id]
