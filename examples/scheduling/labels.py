"""Schedules declared with the task, like Celery's beat_schedule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from conveyor import InMemoryBroker, Scheduler

broker = InMemoryBroker()


# --8<-- [start:labels]
@broker.task(
    schedule=[
        {"cron": "0 9 * * 1", "tz": "Europe/Moscow", "args": [1]},  # Mondays 09:00 Moscow time
        {"interval": 30},  # every 30 s
        {"time": datetime(2030, 1, 1, tzinfo=UTC), "kwargs": {"n": 2}},  # once
        {"cron": "*/30 * * * *", "labels": {"queue": "reports"}},  # per-run labels
    ]
)
async def report(n: int = 0) -> None: ...


# --8<-- [end:labels]
async def main() -> None:
    for info in await Scheduler(broker).list():  # what `conveyor inspect schedules` prints
        print(info.task_name, info.schedule, info.next_fire)
        assert info.next_fire is not None
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
