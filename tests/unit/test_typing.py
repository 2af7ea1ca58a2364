"""What a type checker sees: `mypy --strict` checks these `assert_type`s and the ignores below
(an unused ignore is an error under strict), and pytest runs the same code for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

import conveyor
from conveyor import InMemoryBroker, Signature, SyncTaskHandle, TaskHandle, TaskResult


async def test_handles_are_typed_by_the_function() -> None:
    broker = InMemoryBroker(await_inplace=True)

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task("typed.shout", retries=1)
    def shout(text: str) -> str:
        return text.upper()

    @broker.task
    async def countdown(n: int) -> AsyncIterator[int]:
        for i in range(n, 0, -1):
            yield i

    @broker.task
    def letters(word: str) -> Iterator[str]:
        yield from word

    assert_type(await add(1, 2), int)
    handle = await add.kiq(1, 2)
    assert_type(handle, TaskHandle[int])
    result = await handle.wait_result(timeout=5)
    assert_type(result, TaskResult[int])
    assert_type(result.return_value, int)
    assert result.return_value == 3
    assert_type(await shout.kiq("hi"), TaskHandle[str])
    assert_type(await countdown.kiq(3), TaskHandle[list[int]])
    assert_type(await letters.kiq("ab"), TaskHandle[list[str]])
    assert_type(await add.kicker().with_delay(0).with_priority(3).kiq(1, 2), TaskHandle[int])
    with_broker = add.kicker().with_broker(broker)
    assert_type(await with_broker.kiq(x=1, y=2), TaskHandle[int])
    assert (await (await letters.kiq("ab")).wait_result(timeout=5)).return_value == ["a", "b"]
    handles = await broker.kiq_many([add.s(1, 2), add.s(3, 4)])
    assert_type(handles, list[TaskHandle[int]])
    await broker.shutdown()


def _wrong_calls_are_type_errors(broker: InMemoryBroker) -> None:
    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    add.kiq_sync("one", 2)  # type: ignore[arg-type]  # the point: mypy rejects a str for x
    add.kiq_sync(1)  # type: ignore[call-arg]  # the point: y is missing
    assert_type(add.kiq_sync(1, 2), SyncTaskHandle[int])


def _wrong_workflow_arguments_are_type_errors(broker: InMemoryBroker) -> None:
    """`.s()` takes the whole call or all of it but the first argument (a previous step's
    result fills that); `.si()` only the whole call."""

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task
    def shout(text: str) -> str:
        return text.upper()

    assert_type(add.s(1, 2), Signature[int])
    assert_type(add.s(2), Signature[int])  # add(<previous result>, 2) in a chain
    assert_type(shout.s(), Signature[str])
    assert_type(add.si(x=1, y=2), Signature[int])
    add.s("one", 2)  # type: ignore[call-overload]  # the point: mypy rejects a str for x
    add.s("two")  # type: ignore[call-overload]  # the point: nor a str for y
    add.s(1, 2, 3)  # type: ignore[call-overload]  # the point: one argument too many
    add.si(1)  # type: ignore[call-arg]  # the point: an immutable signature is the whole call
    shout.si(3)  # type: ignore[arg-type]  # the point: mypy rejects an int for text
    conveyor.chain(add.s(1, 2), add.s(3), shout.si("done"))
