"""Shared fixtures: a broker for every engine, with a worker running in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conveyor import (
    AmqpBroker,
    Broker,
    InMemoryBroker,
    NatsBroker,
    RedisBroker,
    SqliteBroker,
    ZeroMQBroker,
)
from conveyor.testing import worker
from tests.servers import (
    amqp_url,
    drop_nats_prefix,
    drop_prefix,
    free_port,
    nats_url,
    redis_url,
    unique_prefix,
)

#: Engines the broker conformance suite runs on; later engines append a factory here.
BROKER_FACTORIES: dict[str, Callable[[Path], Broker]] = {
    "memory": lambda _tmp: InMemoryBroker(),
    "memory-msgpack-signed": lambda _tmp: InMemoryBroker(serializer="msgpack", secret_key="k"),
    "sqlite": lambda tmp: SqliteBroker(str(tmp / "broker.db"), lease_seconds=2.0),
    "redis": lambda _tmp: RedisBroker(redis_url(), prefix=unique_prefix(), lease_seconds=2.0),
    "amqp": lambda tmp: AmqpBroker(
        amqp_url(),
        prefix=unique_prefix(),
        state_url=f"sqlite:///{tmp}/amqp-state.db",
        lease_seconds=2.0,
    ),
    "nats": lambda _tmp: NatsBroker(nats_url(), prefix=unique_prefix(), lease_seconds=2.0),
    # In one process the worker's own sends stay in it (see docs/engines/zmq.md): this checks
    # the broker's wiring and its shared state; tests/integration/test_zmq_engine.py the wire.
    "zmq": lambda tmp: _zmq_broker(tmp),
}


def _zmq_broker(tmp: Path) -> Broker:
    address = f"tcp://127.0.0.1:{free_port()}"
    return ZeroMQBroker(address, address, state_url=f"sqlite:///{tmp}/zmq-state.db")


@pytest.fixture(params=sorted(BROKER_FACTORIES))
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A started broker of each engine; `InMemoryBroker` runs its own in-process worker."""
    made = BROKER_FACTORIES[request.param](tmp_path)
    await made.startup()
    yield made
    if isinstance(made, AmqpBroker):
        await made.transport.delete_topology()  # type: ignore[attr-defined]
    await made.shutdown()
    if isinstance(made, RedisBroker):
        drop_prefix(made.url, made.transport.client.prefix)  # type: ignore[attr-defined]
    if isinstance(made, NatsBroker):
        await drop_nats_prefix(made.url, made.transport.client.prefix)  # type: ignore[attr-defined]


@pytest.fixture
async def running(broker: Broker) -> AsyncIterator[Broker]:
    """`broker` with a worker consuming every queue used by the tests."""
    if isinstance(broker, InMemoryBroker):
        yield broker
        return
    async with worker(broker, queues="default,high,low,emails", max_async_tasks=50):
        yield broker
