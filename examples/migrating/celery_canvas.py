"""Celery's routing, canvas and testing patterns in conveyor form (`python celery_canvas.py`
runs them in this process)."""

from __future__ import annotations

import asyncio

import conveyor.testing
from conveyor import InMemoryBroker, SqliteBroker, chain, chord, group

broker = InMemoryBroker()


# --8<-- [start:routes]
@broker.task  # named "celery_canvas:notify"; Celery would say "celery_canvas.notify"
async def notify(user_id: int) -> str:
    return f"notified {user_id}"


# Celery: celery_app.conf.task_routes = {...}; keys written Celery's way match too
broker.add_routes({"celery_canvas.notify": {"queue": "notifications", "priority": 8}})
# --8<-- [end:routes]


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task
async def mul(x: int, y: int) -> int:
    return x * y


@broker.task
async def total(numbers: list[int]) -> int:
    return sum(numbers)


@broker.task
async def charge(amount: int) -> int:
    raise ValueError(f"card declined for {amount}")


errors: list[str] = []


@broker.task
async def on_charge_error(task_id: str) -> None:
    failed = await broker.get_handle(task_id).wait_result(timeout=10)
    errors.append(f"{failed.task_name}: {failed.error}")


async def canvas() -> None:
    # --8<-- [start:canvas]
    # Celery: (add.s(2, 2) | mul.s(4)).apply_async()
    flow = await (add.s(2, 2) | mul.s(4)).kiq()
    assert (await flow.wait_result(timeout=10)).return_value == 16

    # Celery: add.s(20, 22).delay()
    one = await add.s(20, 22).kiq()
    assert (await one.wait_result(timeout=10)).return_value == 42

    # Celery: add.apply_async((1, 2), link=mul.s(10))
    linked = await chain(add.s(1, 2), mul.s(10)).kiq()
    assert (await linked.wait_result(timeout=10)).return_value == 30

    # Celery: charge.apply_async((5,), link_error=on_charge_error.s())
    failed = await chain(charge.s(5)).on_error(on_charge_error.s()).kiq()
    assert (await failed.wait_result(timeout=10)).is_err

    # Celery: add.starmap([(2, 2), (4, 4)])
    pairs = await add.starmap([(2, 2), (4, 4)]).kiq()
    assert (await pairs.wait_result(timeout=10)).return_value == [4, 8]

    # Celery: chord(add.s(i, i) for i in range(4))(total.s())
    summed = await chord(group(add.s(i, i) for i in range(4)), total.s()).kiq()
    assert (await summed.wait_result(timeout=10)).return_value == 12
    # --8<-- [end:canvas]
    routed = await (await notify.kiq(7)).wait_result(timeout=10)
    assert routed.labels["queue"] == "notifications"
    await broker.wait_all(timeout=10)
    assert errors == ["celery_canvas:charge: card declined for 5"]
    await broker.shutdown()


# --8<-- [start:testing]
test_broker = SqliteBroker("celery-test.db")


@test_broker.task
def simple_task(user_id: int) -> dict[str, object]:
    return {"user_id": user_id, "status": "processed"}


def test_task_execution() -> None:
    # Celery: with start_worker(celery_app, perform_ping_check=False): ...
    with conveyor.testing.start_worker(test_broker):
        result = simple_task.kiq_sync(123).wait_result(timeout=10)
    assert result.return_value["user_id"] == 123
    # --8<-- [end:testing]


if __name__ == "__main__":
    asyncio.run(canvas())
    test_task_execution()
    test_broker.shutdown_sync()
    print("celery patterns: ok")
