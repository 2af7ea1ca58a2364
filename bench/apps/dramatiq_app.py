"""Dramatiq's benchmark actors: Redis broker, or RabbitMQ (`BENCH_AMQP_URL` set, queue
`<BENCH_AMQP_PREFIX>_dramatiq`). Results middleware on the harness's Redis, or, with
`BENCH_RESULTS=none`, none (Dramatiq's default); the actors then end with a `bench.recorder`
write."""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from dramatiq import Broker

from bench import recorder

URL = os.environ.get("BENCH_REDIS_URL", "")
AMQP_URL = os.environ.get("BENCH_AMQP_URL")
QUEUE = f"{os.environ['BENCH_AMQP_PREFIX']}_dramatiq" if AMQP_URL else "default"
RESULTS = os.environ.get("BENCH_RESULTS") != "none"
RECORD = recorder.enabled()


def _broker() -> Broker:
    if AMQP_URL:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=AMQP_URL)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=URL)


def _backend() -> Any:
    from dramatiq.results import Results
    from dramatiq.results.backends.redis import RedisBackend

    redis_backend = RedisBackend(url=URL)
    broker.add_middleware(Results(backend=redis_backend))
    return redis_backend


broker = _broker()
backend: Any = _backend() if RESULTS else None
dramatiq.set_broker(broker)
#: `store_results` is an option of the Results middleware: without it, not even accepted.
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, **({"store_results": True} if RESULTS else {})}


@dramatiq.actor(**OPTIONS)
def noop() -> bool:
    """Do nothing."""
    if RECORD:
        recorder.record()
    return True


@dramatiq.actor(**OPTIONS)
def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    delay = time.time() - sent
    if RECORD:
        recorder.record(delay)
    return delay
