"""Shared fixtures: a broker for every engine, with a worker running in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conveyor import Broker, InMemoryBroker, RedisBroker, SqliteBroker
from conveyor.testing import worker
from tests.servers import drop_prefix, redis_url, unique_prefix

#: Engines the broker conformance suite runs on; later engines append a factory here.
BROKER_FACTORIES: dict[str, Callable[[Path], Broker]] = {
    "memory": lambda _tmp: InMemoryBroker(),
    "memory-msgpack-signed": lambda _tmp: InMemoryBroker(serializer="msgpack", secret_key="k"),
    "sqlite": lambda tmp: SqliteBroker(str(tmp / "broker.db"), lease_seconds=2.0),
    "redis": lambda _tmp: RedisBroker(redis_url(), prefix=unique_prefix(), lease_seconds=2.0),
}


@pytest.fixture(params=sorted(BROKER_FACTORIES))
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A started broker of each engine; `InMemoryBroker` runs its own in-process worker."""
    made = BROKER_FACTORIES[request.param](tmp_path)
    await made.startup()
    yield made
    await made.shutdown()
    if isinstance(made, RedisBroker):
        drop_prefix(made.url, made.transport.client.prefix)  # type: ignore[attr-defined]


@pytest.fixture
async def running(broker: Broker) -> AsyncIterator[Broker]:
    """`broker` with a worker consuming every queue used by the tests."""
    if isinstance(broker, InMemoryBroker):
        yield broker
        return
    async with worker(broker, queues="default,high,low,emails", max_async_tasks=50):
        yield broker
