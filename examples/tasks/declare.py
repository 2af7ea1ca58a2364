"""Declaring tasks and sending them: names, labels, routes, the kicker, sends by name."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker

broker = InMemoryBroker()  # runs tasks in this process: no worker to start


# --8<-- [start:declare]
@broker.task
async def add(x: int, y: int) -> int:  # named "declare:add" (module:function)
    return x + y


@broker.task("emails.send", queue="emails", priority=5, retries=3, timeout=30, team="growth")
def send_email(to: str, subject: str = "hello") -> str:  # sync: runs in a thread pool
    return f"sent {subject!r} to {to}"


# --8<-- [end:declare]
# --8<-- [start:routes]
broker.add_routes({"reports.*": {"queue": "reports", "priority": 8}})


@broker.task("reports.daily")
async def daily_report() -> str:  # queue "reports", priority 8, from the route
    return "report"


# --8<-- [end:routes]
async def main() -> None:
    # --8<-- [start:send]
    assert add.name == "declare:add"
    assert await add(1, 2) == 3  # calling the function runs it here, unchanged

    handle = await add.kiq(1, 2)  # sends it: TaskHandle[int]
    result = await handle.wait_result(timeout=5)  # TaskResult[int]
    assert result.return_value == 3

    # Per-call options go through the kicker, never into the function's arguments:
    handle = await add.kicker().with_queue("high").with_priority(9).with_task_id("add-1").kiq(2, 3)
    assert handle.task_id == "add-1"

    # By name, from a process that does not import the function:
    mail = await broker.kiq_by_name("emails.send", "ada@example.com", subject="welcome")
    assert (await mail.wait_result(timeout=5)).labels["team"] == "growth"  # a free label

    # Many sends in one round trip:
    handles = await broker.kiq_many([add.s(i, i) for i in range(100)])
    assert [(await h.wait_result(timeout=5)).return_value for h in handles][-1] == 198
    # --8<-- [end:send]
    report = await (await daily_report.kiq()).wait_result(timeout=5)
    assert report.labels["queue"] == "reports"
    assert report.labels["priority"] == 8
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
