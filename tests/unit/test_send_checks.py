"""Arguments are checked against the task's annotations when they are sent (`kiq`, a kicker,
`kiq_by_name`, `kiq_many`): what the worker would refuse is refused at once with a `TypeError`
naming the task and the argument, nothing is sent, and nothing the worker accepts is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor import Broker, InMemoryBroker, SqliteBroker, Task, TaskStatus

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Point:
    x: int
    y: int


def register(broker: Broker) -> dict[str, Task[Any, Any]]:
    """The tasks every case calls, registered on `broker`."""

    @broker.task("add")
    def add(x: int, y: int) -> int:
        return x + y

    @broker.task("place")
    def place(p: Point, when: datetime, counts: dict[str, int], *, tags: list[str] = []) -> str:  # noqa: B006
        return f"{p.x},{p.y} {when.year} {sorted(counts)} {tags}"

    @broker.task("loose")
    def loose(anything: Any, *more: int) -> int:
        return len(more)

    return {"add": add, "place": place, "loose": loose}


REFUSED: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("add", ("x", 1), {}, "add: argument 'x': Expected `int`, got `str`"),
    ("add", (1,), {"y": [2]}, "add: argument 'y'"),
    ("add", (True, 2), {}, "add: argument 'x': Expected `int`, got `bool`"),
    ("place", ({"x": "a", "y": 1}, NOW, {}), {}, "place: argument 'p'"),
    ("place", (Point(1, 2), "not a time", {}), {}, "place: argument 'when'"),
    ("place", (Point(1, 2), NOW, {"a": "b"}), {}, "place: argument 'counts'"),
    ("place", (Point(1, 2), NOW, {}), {"tags": "ab"}, "place: argument 'tags'"),
]

ACCEPTED: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("add", ("7", 2), {}),  # the worker casts "7" to 7
    ("add", (1, 2.0), {}),  # the worker's cast takes a whole float for an int
    ("place", ({"x": 1, "y": 2}, NOW.isoformat(), {1: 2}), {}),  # JSON makes the key "1"
    ("place", (Point(1, 2), NOW, {}), {"tags": ("a",)}),
    ("loose", ({"any": ["thing"]}, 1, 2), {}),  # Any and *args are not checked
]


@pytest.fixture
async def sqlite(tmp_path: Any) -> Any:
    """A started SQLite broker no worker reads: what was sent stays in its queue."""
    broker = SqliteBroker(str(tmp_path / "checks.db"))
    tasks = register(broker)
    async with broker:
        yield broker, tasks


@pytest.mark.parametrize(("name", "args", "kwargs", "error"), REFUSED)
async def test_what_the_worker_would_refuse_is_refused_when_sent(
    sqlite: tuple[Broker, dict[str, Task[Any, Any]]],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: str,
) -> None:
    broker, tasks = sqlite
    task = tasks[name]
    sends: dict[str, Callable[[], Awaitable[Any]]] = {
        "kiq": lambda: task.kiq(*args, **kwargs),
        "kicker": lambda: task.kicker().with_priority(1).kiq(*args, **kwargs),
        "kiq_by_name": lambda: broker.kiq_by_name(name, *args, **kwargs),
        "kiq_many": lambda: broker.kiq_many([tasks["add"].s(1, 2), task.s(*args, **kwargs)]),
    }
    for how, send in sends.items():
        with pytest.raises(TypeError) as caught:
            await send()
        assert str(caught.value).startswith(error), (how, str(caught.value))
    assert await broker.transport.queue_stats() == []  # nothing was sent, not even `add`


@pytest.mark.parametrize(("name", "args", "kwargs"), ACCEPTED)
async def test_what_the_worker_accepts_is_sent_and_runs(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    broker = InMemoryBroker(await_inplace=True)
    task = register(broker)[name]
    result = await (await task.kiq(*args, **kwargs)).wait_result(timeout=5)
    assert result.status is TaskStatus.SUCCEEDED, result.error_message
    await broker.shutdown()


async def test_without_casting_nothing_is_checked() -> None:
    """`cast_types=False`: the function gets the values as sent, so any value goes."""
    broker = InMemoryBroker(await_inplace=True, cast_types=False)
    add = register(broker)["add"]
    result = await (await add.kiq("a", "b")).wait_result(timeout=5)
    assert result.return_value == "ab"
    await broker.shutdown()


def test_the_checked_annotations_are_worked_out_once_per_task() -> None:
    tasks = register(InMemoryBroker())
    assert tasks["add"].checked_types == {"x": int, "y": int}
    assert tasks["place"].checked_types == {
        "p": Point,
        "when": datetime,
        "counts": dict[str, int],
        "tags": list[str],
    }
    assert tasks["loose"].checked_types == {}
