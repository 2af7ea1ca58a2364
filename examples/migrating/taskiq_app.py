"""A Taskiq app on conveyor: written as Taskiq's documentation writes it, with its imports
pointed at `conveyor.compat` (`python taskiq_app.py` runs it in this process)."""

# --8<-- [start:imports]
import asyncio
from datetime import UTC, datetime, timedelta

from conveyor.compat.taskiq import (
    Context,
    InMemoryBroker,
    SmartRetryMiddleware,
    TaskiqDepends,
    TaskiqEvents,
    TaskiqScheduler,
    TaskiqState,
)
from conveyor.compat.taskiq.schedule_sources import LabelScheduleSource, StoreScheduleSource

# was: from taskiq import Context, InMemoryBroker, ...
#      from taskiq.schedule_sources import LabelScheduleSource
# --8<-- [end:imports]

# --8<-- [start:broker]
broker = InMemoryBroker().with_middlewares(SmartRetryMiddleware(default_delay=0.05))


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    state.greeting = "hello"  # e.g. a connection pool


attempts: list[int] = []


@broker.task(retry_on_error=True, max_retries=3)  # only tasks that opt in are retried
async def greet(name: str, context: Context = TaskiqDepends()) -> str:
    attempts.append(context.attempt)
    if context.attempt < 2:
        raise ConnectionError("the greeting service blinked")
    return f"{context.state.greeting} {name}"


@broker.task
async def divide(a: int, b: int) -> float:
    return a / b


# --8<-- [end:broker]

# --8<-- [start:schedules]
source = StoreScheduleSource()  # in production: taskiq_redis.RedisScheduleSource(url)
scheduler = TaskiqScheduler(broker, sources=[LabelScheduleSource(broker), source])


@broker.task(schedule=[{"cron": "0 9 * * *", "cron_offset": "Europe/Paris", "schedule_id": "am"}])
async def morning_report() -> None: ...


async def schedule_greetings() -> list[str]:
    daily = (
        await greet.kicker()
        .with_schedule_id("daily-ada")
        .schedule_by_cron(source, "0 8 * * *", "Ada")
    )
    once = await greet.schedule_by_time(source, datetime.now(UTC) + timedelta(hours=1), "Bob")
    ids = sorted(s.schedule_id for s in await source.get_schedules())
    await daily.unschedule()
    await once.unschedule()
    return ids


# --8<-- [end:schedules]


async def main() -> None:
    # --8<-- [start:results]
    await broker.startup()
    task = await greet.kiq("Ada")
    result = await task.wait_result(timeout=5)
    assert (result.return_value, attempts) == ("hello Ada", [1, 2])

    failed = await (await divide.kiq(1, 0)).wait_result(timeout=5)
    try:
        failed.raise_for_error()  # the task's own exception class, as Taskiq gives it
    except ZeroDivisionError:
        print("Cannot divide by zero.")
    # --8<-- [end:results]
    stored = await schedule_greetings()
    assert len(stored) == 2
    assert "daily-ada" in stored
    listed = {info.id for info in await scheduler.list()}
    assert "label:taskiq_app:morning_report:am" in listed
    await broker.shutdown()
    print("greet:", result.return_value, "after", len(attempts), "runs")


if __name__ == "__main__":
    asyncio.run(main())
