"""Taskiq's documented examples, ported with only their imports changed
(`tests/compat/taskiq_docs/`), run on conveyor in this process: getting started, state and
dependencies, errors and middlewares, retries, testing."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conveyor import TaskError, TaskStatus
from conveyor.compat.taskiq import (
    AsyncTaskiqTask,
    InMemoryBroker,
    NoResultError,
    TaskiqEvents,
    TaskiqResult,
    TaskiqResultTimeoutError,
    TaskiqState,
)
from conveyor.compat.taskiq.depends.progress_tracker import TaskProgress, TaskState

DOCS = Path(__file__).parent / "taskiq_docs"


def load(name: str) -> ModuleType:
    """Import an example under its own name, as `taskiq worker module:broker` would."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_getting_started(capsys: pytest.CaptureFixture[str]) -> None:
    await load("getting_started").main()
    out = capsys.readouterr().out
    assert "Returned value: 2" in out
    assert "custom_name {'my_label': 1, 'label2': 'something'}" in out
    assert "second broker: 42" in out


async def test_state_set_by_a_worker_startup_handler_reaches_tasks() -> None:
    docs = load("state_and_dependencies")
    await docs.broker.startup()  # an in-memory broker is its own worker: WORKER_STARTUP runs
    first = await docs.get_val.kiq("key")
    second = await docs.get_val_default.kiq("missing")
    assert isinstance(first, AsyncTaskiqTask)
    assert (await first.wait_result(timeout=2)).return_value == "value"
    assert (await second.wait_result(timeout=2)).return_value is None
    await docs.broker.shutdown()
    assert docs.events == ["startup", "shutdown"]
    assert isinstance(docs.broker.state, TaskiqState)
    assert docs.broker.state.pool == {}


async def test_dependency_trees_classes_generics_and_generators() -> None:
    docs = load("state_and_dependencies")

    async def run(task: Any) -> Any:
        return (await (await task.kiq()).wait_result(timeout=2)).return_value

    d1, d2 = await run(docs.tree)
    assert d2 == d1 + 1  # one `common_dep` for both: cached within the run
    for _ in range(20):  # `use_cache=False`: a value of its own (equal 1 time in 10)
        d1, d3 = await run(docs.no_cache)
        if d3 != d1 + 1:
            break
    else:
        pytest.fail("use_cache=False never gave a value of its own")
    assert 2 <= await run(docs.class_dependency) <= 11
    assert await run(docs.generics) == 1
    docs.lifecycle.clear()
    assert await run(docs.generators) == "VALUE ASYNC VALUE"
    assert docs.lifecycle == ["startup", "async startup", "async shutdown", "shutdown"]
    await docs.broker.shutdown()


async def test_progress_tracker() -> None:
    docs = load("state_and_dependencies")
    task = await docs.with_progress.kiq()
    await task.wait_result(timeout=2)
    progress = await task.get_progress()
    await docs.broker.shutdown()
    assert progress == TaskProgress(state=TaskState.STARTED, meta="30%")


async def test_errors_come_back_as_the_task_raised_them() -> None:
    docs = load("errors_and_middlewares")
    assert await docs.result_error() == "Task failed with ZeroDivisionError: division by zero"
    assert await docs.raise_for_error() == "Cannot divide by zero."
    await docs.broker.shutdown()
    assert any("failed: ZeroDivisionError('division by zero')" in r for r in docs.reports)


async def test_sync_and_async_middlewares() -> None:
    docs = load("errors_and_middlewares")
    docs.reports.clear()
    task = await docs.divide.kiq(6, 3)
    result = await task.wait_result(timeout=2)
    await docs.broker.shutdown()
    assert result.return_value == 2
    assert result.labels["sent_by"] == "sync middleware"
    assert docs.reports == [f"Message {task.task_id} was sent.", "Post save async middleware"]


async def test_only_tasks_that_opt_in_are_retried() -> None:
    docs = load("retries")
    for task in (docs.opted_in, docs.not_opted_in, docs.default_count):
        result = await (await task.kiq()).wait_result(timeout=5)
        assert result.status is TaskStatus.FAILED
    await docs.broker.shutdown()
    # max_retries counts every run, as Taskiq does; default_retry_count=3.
    assert docs.runs == {"opted_in": 4, "not_opted_in": 1, "default_count": 3}


async def test_smart_retries_wait_between_runs_but_not_before_the_first() -> None:
    docs = load("retries")
    sent = time.monotonic()
    connection = await docs.smart.kiq("connection")
    other = await docs.smart.kiq("value")
    first = await connection.wait_result(timeout=5)
    elapsed = time.monotonic() - sent
    second = await other.wait_result(timeout=5)
    await docs.smart_broker.shutdown()
    assert (docs.runs["smart connection"], docs.runs["smart value"]) == (3, 1)
    assert isinstance(first.error, ConnectionError)
    assert isinstance(second.error, ValueError)  # not in types_of_exceptions: not retried
    # Delays: min(1.0 * n, 0.2) after runs 1 and 2; `delay=1.0` does not hold back the first.
    assert 0.4 <= elapsed < 1.0


@pytest.fixture
def testing_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("ENVIRONMENT", "pytest")
    sys.modules.pop("testing_pattern", None)
    yield load("testing_pattern")
    sys.modules.pop("testing_pattern", None)


async def test_testing_pattern_await_inplace_and_dependency_context(
    testing_module: ModuleType,
) -> None:
    broker = testing_module.broker
    assert isinstance(broker, InMemoryBroker)
    # Tasks are functions: call them directly...
    assert await testing_module.parse_int("11") == 11
    # ...or send them, a task awaiting another's result included.
    task = await testing_module.parse_and_add_one.kiq("11")
    assert (await task.wait_result()).return_value == 12
    broker.add_dependency_context({Path: Path("/tmp/project")})
    task = await testing_module.modify_path.kiq()  # `some_path` is injected
    assert (await task.wait_result(timeout=2)).return_value == "/tmp/project/somedir"
    await broker.shutdown()


def test_a_module_level_broker_serves_one_event_loop_after_another(
    testing_module: ModuleType,
) -> None:
    async def parse(value: str) -> int:
        task = await testing_module.parse_int.kiq(value)
        return int((await task.wait_result(timeout=2)).return_value)

    assert [asyncio.run(parse(str(n))) for n in range(3)] == [0, 1, 2]


async def test_results_handles_and_events_api() -> None:
    broker = InMemoryBroker(await_inplace=True)
    seen: list[str] = []

    def on_client_startup(state: TaskiqState) -> None:
        seen.append("client")

    broker.add_event_handler(TaskiqEvents.CLIENT_STARTUP, on_client_startup)
    broker.with_event_handlers(TaskiqEvents.WORKER_SHUTDOWN, lambda state: None)

    @broker.task
    async def slow() -> int:
        return 1

    await broker.startup()
    handle = await slow.kiq()
    result = await handle.wait_result(check_interval=0.01, timeout=1)
    assert isinstance(result, TaskiqResult)
    built = TaskiqResult[None](is_err=True, execution_time=0.1, labels={}, error=KeyError("k"))
    assert built.is_err
    assert isinstance(built.error, KeyError)
    assert isinstance(built.error, TaskError)
    never = AsyncTaskiqTask[int](broker, "no-such-id")
    with pytest.raises(TaskiqResultTimeoutError):
        await never.wait_result(timeout=0.05)
    assert await never.get_result() is None
    await broker.shutdown()
    assert seen == ["client"]


async def test_no_result_error_stores_nothing() -> None:
    broker = InMemoryBroker()
    ran: list[str] = []

    @broker.task
    async def background(name: str) -> None:
        ran.append(name)
        raise NoResultError  # Taskiq: finish without a result

    task = await background.kiq("cleanup")
    await broker.wait_all(timeout=5)
    await broker.shutdown()
    assert ran == ["cleanup"]
    assert await task.get_result() is None
