"""Dramatiq's benchmark actors: Redis broker, or RabbitMQ (`BENCH_AMQP_URL` set, queue
`<BENCH_AMQP_PREFIX>_dramatiq`); Results middleware on the harness's Redis in both."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

URL = os.environ["BENCH_REDIS_URL"]

AMQP_URL = os.environ.get("BENCH_AMQP_URL")
QUEUE = f"{os.environ['BENCH_AMQP_PREFIX']}_dramatiq" if AMQP_URL else "default"

backend = RedisBackend(url=URL)
broker: Broker = RabbitmqBroker(url=AMQP_URL) if AMQP_URL else RedisBroker(url=URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, queue_name=QUEUE)
def noop() -> bool:
    """Do nothing."""
    return True


@dramatiq.actor(store_results=True, queue_name=QUEUE)
def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent
