"""Fixtures of the contract suites: every engine behind one `transport` and one `result_backend`.

Each engine is a `pytest.param` of a factory in `TRANSPORT_ENGINES` / `RESULT_ENGINES`, with the
engine's name as its id (`-k sqlite`). A network engine appends its own, marked to skip when its
server is not there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from conveyor.results.base import ResultBackend
from conveyor.results.memory import MemoryResultBackend
from conveyor.results.sqlite import SqliteResultBackend
from conveyor.transports.base import Transport
from conveyor.transports.memory import MemoryTransport
from conveyor.transports.sqlite import SqliteTransport
from tests.servers import (
    amqp_url,
    drop_nats_prefix,
    drop_prefix,
    nats_url,
    redis_url,
    unique_prefix,
)

#: Lease of the `transport` fixture: long enough that nothing expires by accident.
DEFAULT_LEASE = 5.0


class TransportFactory(Protocol):
    """Makes and starts a transport of the engine under test; all share one store."""

    def __call__(self, *, lease_seconds: float = DEFAULT_LEASE) -> Awaitable[Transport]: ...


def _memory_transport(tmp_path: Path, lease_seconds: float) -> Transport:
    return MemoryTransport(lease_seconds=lease_seconds)


def _sqlite_transport(tmp_path: Path, lease_seconds: float) -> Transport:
    path = str(tmp_path / "conveyor.db")
    return SqliteTransport(path, lease_seconds=lease_seconds, poll_interval=0.01)


def _redis_transport(tmp_path: Path, lease_seconds: float) -> Transport:
    from conveyor.transports.redis import RedisTransport

    return RedisTransport(redis_url(), prefix=_prefix(tmp_path), lease_seconds=lease_seconds)


def _amqp_transport(tmp_path: Path, lease_seconds: float) -> Transport:
    from conveyor.transports.amqp import AmqpTransport

    marker = tmp_path / "amqp-prefix"  # all transports of a test share the prefix and state
    if not marker.exists():
        marker.write_text(unique_prefix())
    state = f"sqlite:///{tmp_path}/amqp-state.db"
    url = amqp_url()
    return AmqpTransport(
        url, prefix=marker.read_text(), state_url=state, lease_seconds=lease_seconds
    )


def _nats_prefix(tmp_path: Path) -> str:
    """One prefix per test, shared by its transports and result stores; dropped afterwards."""
    marker = tmp_path / "nats-prefix"
    if not marker.exists():
        marker.write_text(unique_prefix())
    return marker.read_text()


def _nats_transport(tmp_path: Path, lease_seconds: float) -> Transport:
    from conveyor.transports.nats import NatsTransport

    return NatsTransport(nats_url(), prefix=_nats_prefix(tmp_path), lease_seconds=lease_seconds)


def _nats_results(tmp_path: Path) -> ResultBackend:
    from conveyor.results.nats import NatsResultBackend

    return NatsResultBackend(nats_url(), prefix=_nats_prefix(tmp_path))


def _prefix(tmp_path: Path) -> str:
    """One prefix per test (all transports of a test share it), dropped afterwards."""
    marker = tmp_path / "redis-prefix"
    if not marker.exists():
        marker.write_text(unique_prefix())
    return marker.read_text()


def _memory_results(tmp_path: Path) -> ResultBackend:
    return MemoryResultBackend()


def _sqlite_results(tmp_path: Path) -> ResultBackend:
    return SqliteResultBackend(str(tmp_path / "conveyor.db"))


def _redis_results(tmp_path: Path) -> ResultBackend:
    from conveyor.results.redis import RedisResultBackend

    return RedisResultBackend(redis_url(), prefix=_prefix(tmp_path))


TRANSPORT_ENGINES: list[Any] = [
    pytest.param(_memory_transport, id="memory"),
    pytest.param(_sqlite_transport, id="sqlite"),
    pytest.param(_redis_transport, id="redis"),
    pytest.param(_amqp_transport, id="amqp"),
    pytest.param(_nats_transport, id="nats"),
]

RESULT_ENGINES: list[Any] = [
    pytest.param(_memory_results, id="memory"),
    pytest.param(_sqlite_results, id="sqlite"),
    pytest.param(_redis_results, id="redis"),
    pytest.param(_nats_results, id="nats"),
]


@pytest.fixture(params=TRANSPORT_ENGINES)
async def make_transport(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[TransportFactory]:
    """Yield a factory of started transports; every one made is shut down afterwards."""
    build: Callable[[Path, float], Transport] = request.param
    made: list[Transport] = []

    async def make(*, lease_seconds: float = DEFAULT_LEASE) -> Transport:
        transport = build(tmp_path, lease_seconds)
        made.append(transport)
        await transport.startup()
        return transport

    yield make
    for transport in made:
        drop = getattr(transport, "delete_topology", None)  # RabbitMQ queues outlive the test
        if drop is not None:
            await drop()
        await transport.shutdown()
    _drop_redis_keys(tmp_path)
    await _drop_nats_streams(tmp_path)


@pytest.fixture
async def transport(make_transport: TransportFactory) -> Transport:
    """A started transport of each engine, with a lease that does not run out in a test."""
    return await make_transport()


@pytest.fixture(params=RESULT_ENGINES)
async def result_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ResultBackend]:
    """A started result backend of each engine."""
    build: Callable[[Path], ResultBackend] = request.param
    backend = build(tmp_path)
    await backend.startup()
    yield backend
    await backend.shutdown()
    _drop_redis_keys(tmp_path)
    await _drop_nats_streams(tmp_path)


async def _drop_nats_streams(tmp_path: Path) -> None:
    marker = tmp_path / "nats-prefix"
    if marker.exists():
        await drop_nats_prefix(nats_url(), marker.read_text())


def _drop_redis_keys(tmp_path: Path) -> None:
    marker = tmp_path / "redis-prefix"
    if marker.exists():
        drop_prefix(redis_url(), marker.read_text())
