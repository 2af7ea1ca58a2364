"""The Taskiq plug-ins' constructors (`taskiq_redis`, `taskiq_nats`, `taskiq_aio_pika`) on real
servers, with a worker in the test's event loop: Taskiq's "Available brokers" examples with only
their imports changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from conveyor.compat.taskiq import AsyncBroker, SimpleRetryMiddleware, TaskiqEvents, TaskiqState
from conveyor.compat.taskiq_aio_pika import AioPikaBroker
from conveyor.compat.taskiq_nats import NatsBroker, PullBasedJetStreamBroker
from conveyor.compat.taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker
from conveyor.testing import worker
from tests.servers import (
    amqp_url,
    drop_nats_prefix,
    drop_prefix,
    nats_url,
    redis_url,
    unique_prefix,
)


async def _round_trip(broker: AsyncBroker) -> tuple[int, list[str]]:
    """The docs' `best_task_ever`: a task sent and its result read, with Taskiq's events."""
    events: list[str] = []

    @broker.on_event(TaskiqEvents.WORKER_STARTUP, TaskiqEvents.CLIENT_STARTUP)
    def started(state: TaskiqState) -> None:
        events.append("started")

    @broker.task(retry_on_error=True, max_retries=2)
    async def best_task_ever(n: int) -> int:
        return n * 2

    await broker.startup()
    try:
        async with worker(broker):
            task = await best_task_ever.kiq(21)
            result = await task.wait_result(timeout=10)
    finally:
        await broker.shutdown()
    return result.return_value, events


async def test_redis_stream_broker_with_a_redis_result_backend() -> None:
    url, prefix = redis_url(), unique_prefix()
    results = RedisAsyncResultBackend(redis_url=f"{url}?prefix={prefix}-r", result_ex_time=60)
    broker = RedisStreamBroker(url=url, queue_name=prefix).with_result_backend(results)
    try:
        assert await _round_trip(broker) == (42, ["started"])
        client = redis.Redis.from_url(url)
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}-r:*")]
        ttls = [client.ttl(key) for key in keys]
        client.close()
        assert keys  # the result is under the result backend's own prefix
        assert all(0 < ttl <= 60 for ttl in ttls)
    finally:
        drop_prefix(url, prefix)
        drop_prefix(url, f"{prefix}-r")


async def test_list_queue_broker_with_middlewares() -> None:
    url, prefix = redis_url(), unique_prefix()
    broker = ListQueueBroker(url, queue_name=prefix).with_middlewares(SimpleRetryMiddleware())
    try:
        assert (await _round_trip(broker))[0] == 42
    finally:
        drop_prefix(url, prefix)


@pytest.mark.parametrize("kind", [NatsBroker, PullBasedJetStreamBroker])
async def test_nats_brokers_take_a_list_of_servers(kind: type[NatsBroker]) -> None:
    url, prefix = nats_url(), unique_prefix()
    broker = kind(servers=[url, url], subject=prefix, queue="workers")
    try:
        assert (await _round_trip(broker))[0] == 42
        assert broker.url == f"{url},{url}"
    finally:
        await drop_nats_prefix(url, prefix)


async def test_aio_pika_broker_with_a_redis_result_backend(tmp_path: Path) -> None:
    url, prefix = redis_url(), unique_prefix()
    broker = AioPikaBroker(
        amqp_url(),
        result_backend=RedisAsyncResultBackend(url, prefix_str=prefix),
        queue_name=prefix,
        state_url=f"sqlite:///{tmp_path}/state.db",
    )
    try:
        assert (await _round_trip(broker))[0] == 42
    finally:
        await broker.startup()
        await broker.transport.delete_topology()  # type: ignore[attr-defined]  # AmqpTransport
        await broker.shutdown()
        drop_prefix(url, prefix)
