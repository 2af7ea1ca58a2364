"""taskiq's benchmark tasks: `BENCH_TASKIQ_BROKER` is `list` or `stream` (taskiq-redis), or
`aio-pika` (taskiq-aio-pika on `BENCH_AMQP_URL`, its defaults but for the names, which carry
`BENCH_AMQP_PREFIX`) or `nats-pull` (taskiq-nats's PullBasedJetStreamBroker on
`BENCH_NATS_URL`, its defaults); results in the harness's Redis in every case."""

from __future__ import annotations

import asyncio
import os
import time

from taskiq import AsyncBroker
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ["BENCH_REDIS_URL"]
KIND = os.environ.get("BENCH_TASKIQ_BROKER", "list")

results: RedisAsyncResultBackend[object] = RedisAsyncResultBackend(URL)


def _broker() -> AsyncBroker:
    if KIND == "aio-pika":
        from taskiq_aio_pika import AioPikaBroker, Exchange, Queue

        name = f"{os.environ['BENCH_AMQP_PREFIX']}_taskiq"
        return AioPikaBroker(
            os.environ["BENCH_AMQP_URL"],
            exchange=Exchange(name=name),
            task_queues=[Queue(name=name)],
            dead_letter_queue=Queue(name=f"{name}.dead_letter"),
        )
    if KIND == "nats-pull":  # taskiq-nats's defaults: stream taskiq_jetstream, batch of 1
        from taskiq_nats import PullBasedJetStreamBroker

        return PullBasedJetStreamBroker(os.environ["BENCH_NATS_URL"])
    return ListQueueBroker(URL) if KIND == "list" else RedisStreamBroker(URL)


broker = _broker().with_result_backend(results)


@broker.task
async def noop() -> bool:
    """Do nothing."""
    return True


@broker.task
async def sleepy() -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    return True


@broker.task
async def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent
