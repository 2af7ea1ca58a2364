"""Taskiq's scheduling examples: label schedules, dynamic schedules in a Redis schedule source,
and a schedule source of one's own; only the imports differ from Taskiq's docs (and the Redis
URL comes from the environment, as a deployment's would)."""

import os
from datetime import timedelta

from conveyor.compat.taskiq import ScheduledTask, ScheduleSource, TaskiqScheduler
from conveyor.compat.taskiq.schedule_sources import LabelScheduleSource
from conveyor.compat.taskiq_redis import ListQueueBroker, RedisScheduleSource

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
QUEUE = os.environ.get("QUEUE_NAME", "taskiq")

# Here's the broker that is going to execute tasks.
broker = ListQueueBroker(REDIS_URL, queue_name=QUEUE)

# Here's the source that is used to store scheduled tasks.
redis_source = RedisScheduleSource(REDIS_URL)


class MyScheduleSource(ScheduleSource):
    async def get_schedules(self) -> list["ScheduledTask"]:
        # Here you must return the list of scheduled tasks from your source.
        return [
            ScheduledTask(
                task_name="scheduling:heavy_task",
                labels={},
                args=[100],
                kwargs={},
                schedule_id="from_my_source",
                interval=timedelta(seconds=1),
            ),
        ]


# And here's the scheduler that is used to query scheduled sources.
scheduler = TaskiqScheduler(
    broker,
    sources=[LabelScheduleSource(broker), redis_source, MyScheduleSource()],
)


@broker.task(
    task_name="scheduling:heavy_task",
    schedule=[
        {"cron": "*/5 * * * *", "args": [1]},
        {"cron": "0 9 * * *", "cron_offset": "Europe/Paris", "args": [2], "schedule_id": "nine"},
        {"cron": "0 9 * * *", "cron_offset": timedelta(hours=3), "args": [3]},
        {"interval": timedelta(minutes=1), "args": [4]},
    ],
)
async def heavy_task(value: int) -> int:
    return value + 1


@broker.task(task_name="scheduling:my_task")
async def my_task(arg1: int, arg2: str) -> None:
    """Example task."""
    print("Hello from my_task!", arg1, arg2)
