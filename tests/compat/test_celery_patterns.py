"""Celery's canvas and routing patterns in their conveyor form (docs/migrating-from-celery.md):
routes written Celery's way, `|`, a signature sent on its own, `link` / `link_error`, `starmap`,
`start_worker` for synchronous tests, and the usage guide's retry and error-handling patterns."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor.testing
from conveyor import InMemoryBroker, Retry, SqliteBroker, TaskStatus, chain, chord, group

broker = InMemoryBroker()
calls: list[str] = []


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task
async def mul(x: int, y: int) -> int:
    return x * y


@broker.task
async def xsum(numbers: list[int]) -> int:
    return sum(numbers)


@broker.task
async def fail(x: int) -> int:
    raise ValueError(f"cannot use {x}")


@broker.task
async def log_error(task_id: str) -> str:
    failed = await broker.get_handle(task_id).wait_result(timeout=5)  # stored as this starts
    calls.append(f"{failed.task_name} failed: {failed.error}")
    return task_id


@broker.task(retries=3)
async def flaky_api_call(user_id: int, attempt_log: list[int] | None = None) -> str:
    calls.append(f"call {user_id}")
    if len([c for c in calls if c == f"call {user_id}"]) < 3:
        raise Retry(delay=0.01, exc=ConnectionError("temporary"))
    return f"user {user_id}"


@pytest.fixture(autouse=True)
async def clean() -> AsyncIterator[None]:
    calls.clear()
    yield
    await broker.shutdown()


async def _value(handle_coro: object) -> object:
    handle = await handle_coro  # type: ignore[misc]  # a coroutine of a handle
    return (await handle.wait_result(timeout=5)).return_value


async def test_routes_written_celerys_way_match() -> None:
    routed = InMemoryBroker(await_inplace=True)

    @routed.task
    async def send(to: str) -> str:
        return to

    celery_name, module = send.name.replace(":", "."), send.name.partition(":")[0]
    routed.add_routes(
        {
            celery_name: {"queue": "notifications", "priority": 8},  # `module.function`
            f"{module}.*": {"retries": 2},  # a module glob, as `backend.tasks.notifications.*`
        }
    )
    result = await (await send.kiq("a@b.c")).wait_result(timeout=5)
    await routed.shutdown()
    assert (result.labels["queue"], result.labels["priority"], result.labels["retries"]) == (
        "notifications",
        8,
        2,
    )


async def test_a_route_that_matches_no_task_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    routed = InMemoryBroker()
    routed.add_routes({"backend.tasks.analytics.*": {"queue": "analytics"}})
    with caplog.at_level(logging.WARNING, logger="conveyor.broker"):
        await routed.startup()
    await routed.shutdown()
    assert "route 'backend.tasks.analytics.*' matches no registered task" in caplog.text


async def test_pipe_makes_a_chain() -> None:
    assert await _value((add.s(2, 2) | mul.s(4)).kiq()) == 16  # (2 + 2) * 4
    assert await _value((add.s(1, 1) | mul.s(3) | add.s(1)).kiq()) == 7
    assert await _value((group(add.s(i, i) for i in range(3)) | xsum.s()).kiq()) == 6


async def test_a_signature_is_sent_on_its_own() -> None:
    handle = await add.s(20, 22).kiq()  # Celery: add.s(20, 22).delay()
    assert (await handle.wait_result(timeout=5)).return_value == 42
    labelled = await add.s(1, 2).with_labels(priority=9).kiq()
    assert (await labelled.wait_result(timeout=5)).labels["priority"] == 9


async def test_link_and_link_error() -> None:
    # Celery: add.apply_async((2, 2), link=mul.s(10))
    assert await _value(chain(add.s(2, 2), mul.s(10)).kiq()) == 40
    # Celery: fail.apply_async((7,), link_error=log_error.s())
    handle = await chain(fail.s(7), mul.s(10)).on_error(log_error.s()).kiq()
    result = await handle.wait_result(timeout=5)
    await broker.wait_all(timeout=5)
    assert result.status is TaskStatus.FAILED
    assert isinstance(result.error, ValueError)
    assert calls == [f"{fail.name} failed: cannot use 7"]


async def test_starmap_and_chord() -> None:
    assert await _value(add.starmap([(2, 2), (4, 4), (8, 8)]).kiq()) == [4, 8, 16]
    header = group(add.s(i, i) for i in range(5))
    assert await _value(chord(header, xsum.s()).kiq()) == 20


async def test_the_usage_guides_retry_pattern() -> None:
    # Celery: raise self.retry(exc=exc, countdown=60 * 2 ** self.request.retries)
    result = await (await flaky_api_call.kiq(5)).wait_result(timeout=5)
    assert (result.return_value, result.attempts) == ("user 5", 3)


def test_start_worker_for_synchronous_tests(tmp_path: Path) -> None:
    # Celery: with start_worker(celery_app, perform_ping_check=False): ...
    sync_broker = SqliteBroker(str(tmp_path / "celery.db"))

    @sync_broker.task
    def simple_task(user_id: int) -> dict[str, object]:  # `object`: cast back as it came
        return {"user_id": user_id, "status": "processed"}

    with conveyor.testing.start_worker(sync_broker):
        result = simple_task.kiq_sync(123).wait_result(timeout=10)
    sync_broker.shutdown_sync()
    assert result.return_value == {"user_id": 123, "status": "processed"}
    assert simple_task(user_id=123)["status"] == "processed"  # unit test: call it directly
