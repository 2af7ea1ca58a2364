"""Shared fixtures: a broker for every engine, with a worker running in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conveyor import (
    AmqpBroker,
    Broker,
    InMemoryBroker,
    NatsBroker,
    PostgresBroker,
    RedisBroker,
    SqliteBroker,
    ZeroMQBroker,
)
from conveyor.testing import worker
from tests.servers import (
    amqp_url,
    drop_nats_prefix,
    drop_postgres_schema,
    drop_prefix,
    free_port,
    nats_url,
    postgres_url,
    redis_url,
    unique_prefix,
)

#: The plugin users get through its entry point (`-p no:conveyor` in pyproject.toml keeps that
#: from loading it before coverage starts; `test_pytest_plugin` checks the entry point).
pytest_plugins = ["conveyor.pytest_plugin"]

#: Makes a broker of one engine for one test, and what removes what it left on a server.
Made = tuple[Broker, Callable[[], Awaitable[None]] | None]


def _redis(_tmp: Path) -> Made:
    url, prefix = redis_url(), unique_prefix()

    async def drop() -> None:
        drop_prefix(url, prefix)

    return RedisBroker(url, prefix=prefix, lease_seconds=2.0), drop


def _nats(_tmp: Path) -> Made:
    url, prefix = nats_url(), unique_prefix()

    async def drop() -> None:
        await drop_nats_prefix(url, prefix)

    return NatsBroker(url, prefix=prefix, lease_seconds=2.0), drop


def _postgres(_tmp: Path) -> Made:
    url, schema = postgres_url(), unique_prefix().replace("-", "_")

    async def drop() -> None:
        await drop_postgres_schema(url, schema)

    return PostgresBroker(url, schema=schema, lease_seconds=2.0), drop


def _amqp(tmp: Path) -> Made:
    broker = AmqpBroker(
        amqp_url(),
        prefix=unique_prefix(),
        state_url=f"sqlite:///{tmp}/amqp-state.db",
        lease_seconds=2.0,
    )
    return broker, broker.transport.delete_topology  # type: ignore[attr-defined]  # AmqpTransport


def _zmq(tmp: Path) -> Made:
    # In one process the worker's own sends stay in it (see docs/engines/zmq.md): this checks
    # the broker's wiring and its shared state; tests/integration/test_zmq_engine.py the wire.
    address = f"tcp://127.0.0.1:{free_port()}"
    return ZeroMQBroker(address, address, state_url=f"sqlite:///{tmp}/zmq-state.db"), None


#: Engines the broker conformance suite runs on.
BROKER_FACTORIES: dict[str, Callable[[Path], Made]] = {
    "memory": lambda _tmp: (InMemoryBroker(), None),
    "memory-msgpack-signed": lambda _tmp: (
        InMemoryBroker(serializer="msgpack", secret_key="k"),
        None,
    ),
    "sqlite": lambda tmp: (SqliteBroker(str(tmp / "broker.db"), lease_seconds=2.0), None),
    "redis": _redis,
    "amqp": _amqp,
    "nats": _nats,
    "postgres": _postgres,
    "zmq": _zmq,
}


@pytest.fixture(params=sorted(BROKER_FACTORIES))
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    """A started broker of each engine; `InMemoryBroker` runs its own in-process worker."""
    made, cleanup = BROKER_FACTORIES[request.param](tmp_path)
    await made.startup()
    yield made
    if isinstance(made, AmqpBroker) and cleanup is not None:
        await cleanup()  # while connected: it deletes the queues it declared
        cleanup = None
    await made.shutdown()
    if cleanup is not None:
        await cleanup()


@pytest.fixture
async def running(broker: Broker) -> AsyncIterator[Broker]:
    """`broker` with a worker consuming every queue used by the tests."""
    if isinstance(broker, InMemoryBroker):
        yield broker
        return
    async with worker(broker, queues="default,high,low,emails", max_async_tasks=50):
        yield broker
