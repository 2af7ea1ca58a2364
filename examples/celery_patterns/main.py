"""The Celery usage guide's patterns in conveyor form: `python main.py` runs them in process.

Fire and forget, wait for a result, chain, group, chord, and a crontab-like schedule (listed
with its next fire time; `conveyor scheduler main:broker` would send its runs).
"""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker, ResultTimeout, Scheduler, chain, chord, group

broker = InMemoryBroker()


@broker.task
async def send_notification(user_id: int) -> None:
    print(f"notified {user_id}")


@broker.task
async def calculate_stats(user_id: int) -> dict[str, int]:
    return {"user_id": user_id, "score": user_id * 10}


@broker.task
async def fetch_user(user_id: int) -> dict[str, int]:
    return {"id": user_id, "points": user_id * 2}


@broker.task
async def add_bonus(user: dict[str, int], bonus: int) -> dict[str, int]:
    return {**user, "points": user["points"] + bonus}


@broker.task
async def points(user: dict[str, int]) -> int:
    return user["points"]


@broker.task
async def aggregate_results(values: list[int]) -> int:
    return sum(values)


@broker.task(schedule=[{"cron": "0 9 * * *", "tz": "Europe/Moscow"}, {"interval": 30}])
async def daily_report() -> None:
    print("report")


async def main() -> None:
    # Pattern 1: fire and forget.
    await send_notification.kiq(1)

    # Pattern 2: wait for the result.
    handle = await calculate_stats.kiq(2)
    try:
        print("stats:", (await handle.wait_result(timeout=30)).return_value)
    except ResultTimeout:
        print("still processing:", handle.task_id)

    # Pattern 3: chain: each step gets the previous result first.
    flow = chain(fetch_user.s(3), add_bonus.s(100), points.s())
    print("chain:", (await (await flow.kiq()).wait_result(timeout=10)).return_value)

    # Pattern 4: group: in parallel, results in order.
    users = await (await group(fetch_user.s(uid) for uid in range(4)).kiq()).wait_result(10)
    print("group:", users.return_value)

    # Pattern 5: chord: a group, then a callback with the list of results.
    header = group(chain(fetch_user.s(uid), points.s()) for uid in range(4))
    total = await (await chord(header, aggregate_results.s()).kiq()).wait_result(timeout=10)
    print("chord:", total.return_value)

    # Periodic tasks: declared with the task; stored ones are added at run time.
    scheduler = Scheduler(broker)
    await daily_report.schedule_by_cron(scheduler, "*/5 * * * *")
    for info in await scheduler.list():
        print("schedule:", info.task_name, info.schedule, "next", info.next_fire)
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
