"""`Task.fits_exactly`, the send and run paths' check of a call without `inspect`: it may only
say yes when `Signature.bind` would bind every parameter, and the worker must then call the
function with the same values as the slow path."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import InMemoryBroker

broker = InMemoryBroker(await_inplace=True)


@broker.task
def plain(a: int, b: int, c: int = 3) -> tuple[int, int, int]:
    return (a, b, c)


@broker.task
def starred(a: int, *rest: int) -> tuple[int, ...]:
    return (a, *rest)


@broker.task
def keyword_only(a: int, *, b: int) -> tuple[int, int]:
    return (a, b)


@broker.task
def nothing() -> int:
    return 0


def positional_only_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator whose wrapper takes positions only, though its signature shows fn's."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return fn(*args)

    return wrapper


@broker.task
@positional_only_wrapper
def wrapped(a: int, b: str) -> str:
    return f"{a + 1}{b}"


CALLS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (plain, (1, 2, 3), {}),
    (plain, (1, 2), {"c": 4}),
    (plain, (), {"a": 1, "b": 2, "c": 3}),
    (plain, (1,), {"b": 2, "c": 3}),
    (plain, (1, 2), {}),  # c from its default: the slow path
    (plain, (1, 2), {"a": 1}),  # a twice
    (plain, (1, 2), {"d": 1}),  # an unknown name
    (plain, (1, 2, 3, 4), {}),  # too many
    (plain, (), {"a": 1, "b": 2, "d": 3}),
    (starred, (1, 2, 3), {}),
    (keyword_only, (1,), {"b": 2}),
    (nothing, (), {}),
    (nothing, (1,), {}),
]


@pytest.mark.parametrize(("task", "args", "kwargs"), CALLS)
def test_fits_exactly_only_says_yes_when_every_parameter_binds(
    task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    try:
        bound = task.call_signature.bind(*args, **kwargs)
    except TypeError:
        bound = None
    every = bound is not None and len(bound.arguments) == len(task.call_signature.parameters)
    plain_params = all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        for p in task.call_signature.parameters.values()
    )
    assert task.fits_exactly(args, kwargs) is (every and plain_params)


@pytest.mark.parametrize(
    ("args", "kwargs"), [((1, 2, 3), {}), ((1, 2), {"c": 5}), ((), {"b": 2, "a": 1, "c": 0})]
)
async def test_the_worker_calls_with_the_values_sent(
    args: tuple[int, ...], kwargs: dict[str, int]
) -> None:
    handle = await plain.kiq(*args, **kwargs)
    expected = plain(*args, **kwargs)
    assert (await handle.wait_result(timeout=5)).return_value == expected


async def test_positional_arguments_stay_positional() -> None:
    handle = await wrapped.kiq("7", "x")  # "7" is cast to the annotated int by the worker
    assert (await handle.wait_result(timeout=5)).return_value == "8x"
