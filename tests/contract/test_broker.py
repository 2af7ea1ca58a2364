"""The broker conformance suite: one set of behaviours, run on every engine (`BROKER_FACTORIES`).

Each test registers its tasks on the engine's broker and runs them through a real worker loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pydantic
import pytest

from conveyor import (
    Broker,
    Context,
    Depends,
    Middleware,
    Reject,
    ResultTimeout,
    Retry,
    SoftTimeLimitExceeded,
    TaskError,
    TaskMessage,
    TaskResult,
    TaskStatus,
)
from conveyor.engines.base import Delivery, Outgoing

pytestmark = pytest.mark.timeout(60)


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Wait until the async predicate `check()` is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_async_task_result(running: Broker) -> None:
    @running.task
    async def add(x: int, y: int) -> int:
        return x + y

    assert await add(1, 2) == 3  # a local call runs the function unchanged
    handle = await add.kiq(1, 2)
    result = await handle.wait_result(timeout=10)
    assert result.return_value == 3
    assert result.status is TaskStatus.SUCCEEDED
    assert not result.is_err
    assert result.error is None
    assert result.attempts == 1
    assert result.worker
    assert result.execution_time >= 0
    assert result.task_name == add.name
    assert result.task_id == handle.task_id
    assert result.started_at is not None
    assert result.finished_at is not None
    assert await handle.is_ready()
    assert await handle.status() is TaskStatus.SUCCEEDED
    assert (await running.get_handle(handle.task_id).get_result()) is not None


async def test_sync_task_runs_in_a_thread(running: Broker) -> None:
    threads: list[threading.Thread] = []

    @running.task(task_name="sync.double")
    def double(x: int) -> int:
        threads.append(threading.current_thread())
        return 2 * x

    assert double(4) == 8  # a local call, in this thread
    result = await (await double.kiq(21)).wait_result(timeout=10)
    assert result.return_value == 42
    assert double.name == "sync.double"
    assert threads[0] is threading.main_thread()
    assert threads[1] is not threading.main_thread()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Item(msgspec.Struct):
    name: str
    price: Decimal


class User(pydantic.BaseModel):
    name: str
    born: datetime


async def test_arguments_and_results_are_cast_to_annotations(running: Broker) -> None:
    seen: dict[str, Any] = {}

    @running.task
    async def typed(
        when: datetime, ident: uuid.UUID, amount: Decimal, color: Color, point: Point, item: Item
    ) -> Point:
        seen.update(when=when, ident=ident, amount=amount, color=color, point=point, item=item)
        return Point(point.x + 1, point.y + 1)

    now = datetime.now(UTC)
    ident = uuid.uuid4()
    item = Item("pen", Decimal("1.50"))
    handle = await typed.kiq(now, ident, Decimal("2.25"), Color.BLUE, Point(1, 2), item)
    result = await handle.wait_result(timeout=10)
    result.raise_for_error()
    assert seen == {
        "when": now,
        "ident": ident,
        "amount": Decimal("2.25"),
        "color": Color.BLUE,
        "point": Point(1, 2),
        "item": item,
    }
    assert result.return_value == Point(2, 3)


async def test_pydantic_models_are_cast(running: Broker) -> None:
    @running.task
    async def greet(user: User) -> User:
        assert isinstance(user, User)
        return User(name=user.name.upper(), born=user.born)

    born = datetime(1990, 5, 17, tzinfo=UTC)
    result = await (await greet.kiq(User(name="ada", born=born))).wait_result(timeout=10)
    assert result.return_value == User(name="ADA", born=born)


async def test_bad_arguments_raise_type_error_at_kiq_and_send_nothing(broker: Broker) -> None:
    @broker.task
    async def needs_int(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="cannot"):
        await needs_int.kiq(object())  # type: ignore[arg-type]  # deliberately unserializable
    with pytest.raises(TypeError, match="needs_int"):
        await needs_int.kiq(1, 2)  # type: ignore[call-arg]  # deliberately too many
    assert not any(q.ready for q in await broker.transport.queue_stats())


async def test_kiq_by_name_and_unknown_name(running: Broker) -> None:
    @running.task("named.echo")
    async def echo(text: str) -> str:
        return text

    ok = await running.kiq_by_name("named.echo", "hi")
    assert (await ok.wait_result(timeout=10)).return_value == "hi"
    missing = await running.kiq_by_name("no.such.task", 1)
    result = await missing.wait_result(timeout=10)
    assert result.status is TaskStatus.FAILED
    assert result.error_type == "TaskNotFound"
    dead = await running.transport.dead_letters()
    assert [d.task_id for d in dead] == [missing.task_id]


async def test_arguments_that_do_not_fit_fail_without_retry(running: Broker) -> None:
    @running.task(retries=3)
    async def wants_int(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="argument 'x'"):  # a producer that knows the task
        await running.kiq_by_name(wants_int.name, "not a number")
    # One that does not (another app, another language) sends it as is: the worker refuses it.
    message = running.build_message(wants_int.name, ["not a number"], {}, None, None, None)
    await running.send([message])
    handle = running.get_handle(message.task_id)
    result = await handle.wait_result(timeout=10)
    assert result.is_err
    assert result.attempts == 1
    assert "wants_int" in (result.error_message or "")


async def test_retries_with_backoff_then_success(running: Broker) -> None:
    attempts: list[float] = []

    @running.task(retries=3, retry_delay=0.1, retry_backoff=2.0)
    async def flaky(context: Context = Depends()) -> int:
        attempts.append(time.monotonic())
        if context.attempt < 3:
            raise ConnectionError("try again")
        return context.attempt

    result = await (await flaky.kiq()).wait_result(timeout=10)
    assert result.return_value == 3
    assert result.attempts == 3
    assert attempts[1] - attempts[0] >= 0.09
    assert attempts[2] - attempts[1] >= 0.19  # backoff doubled the delay


async def test_exhausted_retries_fail_and_dead_letter(running: Broker) -> None:
    @running.task(retries=1, retry_delay=0.01)
    def always_fails() -> None:
        raise ValueError("boom")

    handle = await always_fails.kiq()
    result = await handle.wait_result(timeout=10)
    assert result.status is TaskStatus.FAILED
    assert result.attempts == 2
    assert result.error_type == "ValueError"
    assert result.error_message == "boom"
    assert "ValueError: boom" in (result.error_traceback or "")
    with pytest.raises(TaskError, match="boom"):
        result.raise_for_error()
    assert handle.task_id in [d.task_id for d in await running.transport.dead_letters()]


async def test_a_failure_has_a_status_between_its_dead_letter_and_its_result(
    running: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[TaskStatus | None] = []
    dead_letter = running.transport.dead_letter

    async def observed(delivery: Delivery, reason: str) -> None:
        await dead_letter(delivery, reason)
        seen.append(await running.task_status(delivery.task_id))  # its result is not stored yet

    monkeypatch.setattr(running.transport, "dead_letter", observed)

    @running.task(retries=1, retry_delay=0.01)
    def fails() -> None:
        raise ValueError("boom")

    @running.task
    def fails_at_once() -> None:
        raise ValueError("boom")

    for task in (fails, fails_at_once):
        handle = await task.kiq()
        assert (await handle.wait_result(timeout=10)).status is TaskStatus.FAILED
        assert await running.task_status(handle.task_id) is TaskStatus.FAILED
    assert seen == [TaskStatus.RUNNING, TaskStatus.RUNNING]


async def test_retry_on_limits_which_errors_retry(running: Broker) -> None:
    calls: list[int] = []

    @running.task(retries=5, retry_on=[ConnectionError])
    async def picky() -> None:
        calls.append(1)
        raise KeyError("not retried")

    result = await (await picky.kiq()).wait_result(timeout=10)
    assert result.is_err
    assert len(calls) == 1


async def test_retry_signal_and_reject(running: Broker) -> None:
    @running.task
    async def again(context: Context = Depends()) -> int:
        if context.attempt == 1:
            raise Retry(delay=0.05)
        return context.attempt

    @running.task(retries=5)
    async def rejected() -> None:
        raise Reject("bad payload")

    assert (await (await again.kiq()).wait_result(timeout=10)).return_value == 2
    result = await (await rejected.kiq()).wait_result(timeout=10)
    assert result.is_err
    assert result.attempts == 1
    assert result.error_type == "Reject"


async def test_hard_timeout_async_and_sync(running: Broker) -> None:
    @running.task(timeout=0.2)
    async def slow_async() -> None:
        await asyncio.sleep(30)

    @running.task(timeout=0.2)
    def slow_sync() -> None:
        for _ in range(600):
            time.sleep(0.05)

    start = time.monotonic()
    for task in (slow_async, slow_sync):
        result = await (await task.kiq()).wait_result(timeout=10)
        assert result.status is TaskStatus.FAILED
        assert result.error_type == "TimeoutError"
    assert time.monotonic() - start < 5


async def test_soft_timeout_lets_the_task_clean_up(running: Broker) -> None:
    @running.task(soft_timeout=0.1, timeout=5)
    async def careful() -> str:
        try:
            await asyncio.sleep(10)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "not reached"

    @running.task(soft_timeout=0.1, timeout=5)
    def careful_sync() -> str:
        try:
            for _ in range(200):
                time.sleep(0.02)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "not reached"

    for task in (careful, careful_sync):
        assert (await (await task.kiq()).wait_result(timeout=10)).return_value == "cleaned up"


async def test_delay_and_eta(running: Broker) -> None:
    @running.task
    async def stamp() -> float:
        return time.time()

    sent = time.time()
    delayed = await stamp.kicker().with_delay(0.5).kiq()
    assert await delayed.status() is TaskStatus.SCHEDULED
    at = await stamp.kicker().with_eta(datetime.now(UTC) + timedelta(seconds=0.5)).kiq()
    for handle in (delayed, at):
        ran = (await handle.wait_result(timeout=10)).return_value
        assert ran - sent >= 0.45


async def test_priorities_run_higher_first(running: Broker) -> None:
    order: list[int] = []
    gate = asyncio.Event()

    @running.task(queue="low")
    async def blocker() -> None:
        await gate.wait()

    @running.task(queue="low")
    async def record(n: int) -> None:
        order.append(n)

    first = await blocker.kiq()
    await eventually(lambda: _is_running(first))
    sigs = [record.s(p).with_labels(priority=p) for p in (1, 5, 9, 0, 7)]
    handles = await running.kiq_many(sigs)
    gate.set()
    for handle in handles:
        await handle.wait_result(timeout=10)
    assert order == [9, 7, 5, 1, 0]


async def _is_running(handle: Any) -> bool:
    return bool(await handle.status() is TaskStatus.RUNNING)


async def test_cancel_queued_and_running(running: Broker) -> None:
    started = asyncio.Event()

    @running.task
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(30)

    queued = await sleepy.kicker().with_delay(30).kiq()
    assert await queued.cancel() is True
    assert await queued.status() is TaskStatus.CANCELLED
    busy = await sleepy.kiq()
    await asyncio.wait_for(started.wait(), 10)
    assert await busy.cancel() is False
    result = await busy.wait_result(timeout=10)
    assert result.status is TaskStatus.CANCELLED


async def test_progress(running: Broker) -> None:
    release = asyncio.Event()

    @running.task
    async def report(context: Context = Depends()) -> str:
        await context.set_progress({"done": 1, "total": 2})
        await release.wait()
        return "done"

    handle = await report.kiq()
    await eventually(lambda: _has_progress(handle))
    assert await handle.get_progress() == {"done": 1, "total": 2}
    release.set()
    assert (await handle.wait_result(timeout=10)).return_value == "done"


async def _has_progress(handle: Any) -> bool:
    return await handle.get_progress() is not None


async def test_generator_tasks_stream(running: Broker) -> None:
    @running.task
    async def agen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i * i

    @running.task
    def sgen(n: int) -> Iterator[str]:
        for i in range(n):
            yield str(i)

    handle = await agen.kiq(4)
    assert [item async for item in handle.stream()] == [0, 1, 4, 9]
    assert (await handle.wait_result(timeout=10)).return_value == [0, 1, 4, 9]
    handle2 = await sgen.kiq(3)
    assert [item async for item in handle2.stream()] == ["0", "1", "2"]
    assert (await handle2.wait_result(timeout=10)).return_value == ["0", "1", "2"]


async def test_unique_for_sends_once(running: Broker) -> None:
    runs: list[int] = []

    @running.task(unique_for=30)
    async def once(n: int) -> int:
        runs.append(n)
        return n

    first = await once.kicker().with_task_id("same-id").kiq(1)
    second = await once.kicker().with_task_id("same-id").kiq(2)
    assert second.task_id == first.task_id
    assert (await first.wait_result(timeout=10)).return_value == 1
    await running.wait_all(timeout=10)
    assert runs == [1]


async def test_rate_limit(running: Broker) -> None:
    starts: list[float] = []

    @running.task(rate_limit="4/s")
    async def limited() -> None:
        starts.append(time.monotonic())

    handles = [await limited.kiq() for _ in range(8)]
    for handle in handles:
        await handle.wait_result(timeout=20)
    starts.sort()
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 0.9, starts  # never 5 starts within one second


async def test_dependencies_and_generator_cleanup(running: Broker) -> None:
    events: list[str] = []

    def settings() -> dict[str, int]:
        return {"factor": 3}

    async def session(context: Context = Depends()) -> AsyncIterator[str]:
        events.append(f"open {context.attempt}")
        try:
            yield "db"
        finally:
            events.append("close")

    @running.task
    async def uses(
        x: int,
        conf: dict[str, int] = Depends(settings),
        db: str = Depends(session),
    ) -> str:
        if x < 0:
            raise ValueError("negative")
        return f"{db}:{x * conf['factor']}"

    assert (await (await uses.kiq(2)).wait_result(timeout=10)).return_value == "db:6"
    assert events == ["open 1", "close"]
    assert (await (await uses.kiq(-1)).wait_result(timeout=10)).is_err
    assert events == ["open 1", "close", "open 1", "close"]


async def test_middleware_hooks_sync_and_async(running: Broker) -> None:
    calls: list[str] = []

    class Recorder(Middleware):
        def pre_send(self, message: TaskMessage) -> TaskMessage:
            calls.append("pre_send")
            message.labels["traced"] = True
            return message

        async def post_send(self, message: TaskMessage) -> None:
            calls.append("post_send")

        async def pre_execute(self, message: TaskMessage) -> TaskMessage:
            calls.append(f"pre_execute traced={message.labels.get('traced')}")
            return message

        def post_execute(self, message: TaskMessage, result: TaskResult[Any]) -> None:
            calls.append(f"post_execute {result.status}")

        def on_error(
            self, message: TaskMessage, result: TaskResult[Any], exception: BaseException
        ) -> None:
            calls.append(f"on_error {type(exception).__name__}")

        async def post_save(self, message: TaskMessage, result: TaskResult[Any]) -> None:
            calls.append("post_save")

    running.add_middlewares([Recorder()])

    @running.task
    async def ok() -> int:
        return 1

    @running.task
    async def bad() -> int:
        raise KeyError("x")

    result = await (await ok.kiq()).wait_result(timeout=10)
    assert result.labels["traced"] is True
    await _post_saved(calls)  # post_save runs after the result is visible (and acked)
    sender, worker_hooks = _by_side(calls)
    assert sender == ["pre_send", "post_send"]
    assert worker_hooks == ["pre_execute traced=True", "post_execute succeeded", "post_save"]
    calls.clear()
    await (await bad.kiq()).wait_result(timeout=10)
    await _post_saved(calls)
    sender, worker_hooks = _by_side(calls)
    assert sender == ["pre_send", "post_send"]
    assert worker_hooks[-3:] == ["post_execute failed", "on_error KeyError", "post_save"]


async def _post_saved(calls: list[str]) -> None:
    """Wait until the worker's `post_save` hook has run: on an engine that stores a result and
    acks in one step, the result is visible and the queue empty just before it runs."""
    deadline = time.monotonic() + 10
    while "post_save" not in calls:
        assert time.monotonic() < deadline, f"no post_save within 10 s: {calls}"
        await asyncio.sleep(0.005)


def _by_side(calls: list[str]) -> tuple[list[str], list[str]]:
    """The sender's hooks and the worker's, each in its order: a worker may run the task before
    the sender's `post_send`, so the two sides interleave in no fixed order."""
    sender = [c for c in calls if c in ("pre_send", "post_send")]
    return sender, [c for c in calls if c not in sender]


async def test_garbage_on_the_wire_is_dead_lettered_and_worker_goes_on(running: Broker) -> None:
    @running.task
    async def fine() -> str:
        return "still working"

    await running.transport.publish([Outgoing("garbage-1", "default", b"\x00\xff not a message")])
    result = await running.get_handle("garbage-1").wait_result(timeout=10)
    assert result.status is TaskStatus.FAILED
    assert result.error_type in {
        "SerializationError",
        "SignatureError",
    }  # signed brokers check first
    assert "garbage-1" in [d.task_id for d in await running.transport.dead_letters()]
    assert (await (await fine.kiq()).wait_result(timeout=10)).return_value == "still working"


async def test_wait_result_timeout_and_store_result_false(running: Broker) -> None:
    gate = asyncio.Event()

    @running.task
    async def waits() -> None:
        await gate.wait()

    @running.task(store_result=False)
    async def silent() -> int:
        return 1

    handle = await waits.kiq()
    with pytest.raises(ResultTimeout):
        await handle.wait_result(timeout=0.1)
    assert await handle.get_result() is None
    gate.set()
    await handle.wait_result(timeout=10)
    quiet = await silent.kiq()
    await running.wait_all(timeout=10)
    assert await quiet.get_result() is None


async def test_kiq_many_and_routes(running: Broker) -> None:
    running.add_routes({"routes.*": {"queue": "emails", "priority": 3}})

    @running.task("routes.send")
    async def send(to: str) -> str:
        return to

    @running.task
    async def mul(x: int, y: int) -> int:
        return x * y

    handles = await running.kiq_many([send.s("a@b.c"), mul.s(3, 4)])
    results = [await h.wait_result(timeout=10) for h in handles]
    assert [r.return_value for r in results] == ["a@b.c", 12]
    assert results[0].labels["queue"] == "emails"
    assert results[0].labels["priority"] == 3
