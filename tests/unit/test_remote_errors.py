"""`result.error` and `raise_for_error()` give the task's own exception class when this process
has it (found by module and name in `sys.modules`: nothing is imported or unpickled), and a plain
`TaskError` otherwise."""

from __future__ import annotations

import json
import sys

import pytest

from conveyor import InMemoryBroker, TaskError, TaskResult, TaskStatus
from conveyor.errors import remote_error


class PaymentDeclined(Exception):
    """A failure defined by the app."""

    def __init__(self, code: int, reason: str) -> None:  # not callable with one message
        super().__init__(f"{code}: {reason}")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ZeroDivisionError("division by zero"), ZeroDivisionError),
        (KeyError("user"), KeyError),
        (FileNotFoundError(2, "no such file"), FileNotFoundError),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), UnicodeDecodeError),
        (TimeoutError("slow"), TimeoutError),
        (json.JSONDecodeError("bad", "{", 0), json.JSONDecodeError),
        (PaymentDeclined(51, "insufficient funds"), PaymentDeclined),
    ],
)
async def test_the_original_class_comes_back(error: Exception, kind: type[Exception]) -> None:
    broker = InMemoryBroker(await_inplace=True)

    @broker.task
    async def fail() -> None:
        raise error

    result = await (await fail.kiq()).wait_result(timeout=5)
    await broker.shutdown()
    assert isinstance(result.error, kind)
    assert isinstance(result.error, TaskError)  # code written for the fallback still works
    assert str(result.error) == str(error)
    assert result.error.exc_type == type(error).__qualname__
    assert type(result.error).__name__ == type(error).__name__
    with pytest.raises(kind):
        result.raise_for_error()


def test_a_class_not_imported_here_is_never_imported() -> None:
    module = "tests.unit.never_imported_errors"
    error = remote_error("Boom", "no", module=module)
    assert type(error) is TaskError
    assert module not in sys.modules


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "KeyboardInterrupt"),  # not an Exception: never rebuilt
        ("builtins", "len"),  # not a class
        ("os", "path"),  # a module
        (__name__, "test_a_class_not_imported_here_is_never_imported.<locals>.X"),
        (None, "NoSuchError"),
    ],
)
def test_what_is_not_an_exception_class_gives_task_error(module: str | None, name: str) -> None:
    assert type(remote_error(name, "msg", module=module)) is TaskError


def test_a_result_read_back_keeps_the_module() -> None:
    result: TaskResult[None] = TaskResult(
        task_id="1",
        task_name="t",
        status=TaskStatus.FAILED,
        error_type="PaymentDeclined",
        error_module=__name__,
        error_message="51: insufficient funds",
    )
    assert isinstance(result.error, PaymentDeclined)
    assert result.error.args == ("51: insufficient funds",)
