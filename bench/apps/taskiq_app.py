"""taskiq's benchmark tasks: `BENCH_TASKIQ_BROKER` is `list` or `stream` (taskiq-redis), or
`aio-pika` (taskiq-aio-pika on `BENCH_AMQP_URL`, its defaults but for the names, which carry
`BENCH_AMQP_PREFIX`) or `nats-pull` (taskiq-nats's PullBasedJetStreamBroker on
`BENCH_NATS_URL`, its defaults). Results in the harness's Redis, or, with `BENCH_RESULTS=none`,
none (taskiq's default); the tasks then end with a `bench.recorder` write."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskiq import AsyncBroker

from bench import recorder

URL = os.environ.get("BENCH_REDIS_URL", "")
KIND = os.environ.get("BENCH_TASKIQ_BROKER", "list")
RECORD = recorder.enabled()


def _results() -> Any:
    """taskiq-redis's result backend, or None (taskiq's default: no results)."""
    if os.environ.get("BENCH_RESULTS") == "none":
        return None
    from taskiq_redis import RedisAsyncResultBackend

    return RedisAsyncResultBackend(URL)


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
    from taskiq_redis import ListQueueBroker, RedisStreamBroker

    return ListQueueBroker(URL) if KIND == "list" else RedisStreamBroker(URL)


results = _results()
broker = _broker() if results is None else _broker().with_result_backend(results)


@broker.task
async def noop() -> bool:
    """Do nothing."""
    if RECORD:
        recorder.record()
    return True


@broker.task
async def sleepy() -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    if RECORD:
        recorder.record()
    return True


@broker.task
async def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    delay = time.time() - sent
    if RECORD:
        recorder.record(delay)
    return delay
