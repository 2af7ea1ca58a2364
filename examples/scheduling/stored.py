"""Schedules stored in the broker at run time, from any process, and a scheduler sending them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from conveyor import InMemoryBroker, Scheduler
from conveyor.scheduler import Cron

broker = InMemoryBroker()
ran = asyncio.Event()


@broker.task
async def report(n: int = 0) -> None:
    if n == 5:
        ran.set()


async def main() -> None:
    # --8<-- [start:stored]
    scheduler = Scheduler(broker)
    sid = await report.schedule_by_cron(scheduler, "*/5 * * * *", 2)
    sid2 = await report.schedule_by_cron(scheduler, Cron("0 9 * * *", tz="Asia/Tokyo"), 3)
    sid3 = await report.schedule_by_interval(scheduler, 60, n=4)  # first run in 60 s
    await report.schedule_by_time(scheduler, datetime.now(UTC), 5)  # now or past: next tick
    await scheduler.add(report.s(6).with_labels(priority=9), Cron("0 * * * *"))  # with labels
    assert await scheduler.remove(sid)  # True when it existed
    for s in await scheduler.list():  # label and stored schedules with their next fire time
        print(s.id, s.task_name, s.schedule, s.next_fire)
    # --8<-- [end:stored]
    assert {sid2, sid3} <= {s.id for s in await scheduler.list()}

    # --8<-- [start:run]
    stop = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stop))  # what `conveyor scheduler` runs
    await asyncio.wait_for(ran.wait(), timeout=5)  # the one-off run was sent and ran
    stop.set()
    await running
    # --8<-- [end:run]
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
