"""The broker, its result backend, the schedule sources and the scheduler."""

import os

from conveyor.compat import taskiq_fastapi
from conveyor.compat.taskiq import AsyncBroker, InMemoryBroker, SmartRetryMiddleware, TaskiqScheduler
from conveyor.compat.taskiq.schedule_sources import LabelScheduleSource
from conveyor.compat.taskiq_redis import RedisAsyncResultBackend, RedisScheduleSource, RedisStreamBroker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/1")
QUEUE_NAME = os.environ.get("QUEUE_NAME", "project")

broker: AsyncBroker = RedisStreamBroker(REDIS_URL, queue_name=QUEUE_NAME).with_result_backend(
    RedisAsyncResultBackend(REDIS_URL, result_ex_time=600, prefix_str=f"{QUEUE_NAME}-results")
)
if os.environ.get("ENVIRONMENT") == "pytest":
    broker = InMemoryBroker()

broker.add_middlewares(SmartRetryMiddleware(default_delay=0.1))

redis_source = RedisScheduleSource(REDIS_URL)
scheduler = TaskiqScheduler(broker, sources=[LabelScheduleSource(broker), redis_source])

taskiq_fastapi.init(broker, "project.app:app")
