"""Fixtures of the contract suites: every engine (`cases/`) behind one `transport`, one `store` and
one `result_backend`, each made through the registry from the engine's URL (`-k sqlite` picks
one engine). A network engine is skipped when its server is not there, and fails under CI.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from conveyor.engines import registry
from conveyor.engines.base import Engine, MessageTransport, ResultBackend, StateStore
from tests.contract.cases import EngineCase, amqp, memory, nats, postgres, redis, sqlite

#: Lease of the `transport` fixture: long enough that nothing expires by accident.
DEFAULT_LEASE = 5.0

#: Engines that keep state and results themselves: the store and result store suites.
STATE_CASES: list[EngineCase] = [memory.CASE, sqlite.CASE, redis.CASE, nats.CASE, postgres.CASE]
#: Every engine that moves messages: the transport suite (RabbitMQ with each state store).
TRANSPORT_CASES: list[EngineCase] = [*STATE_CASES, amqp.SQLITE_STATE, amqp.REDIS_STATE]


def _params(cases: list[EngineCase]) -> list[Any]:
    return [pytest.param(case, id=case.name) for case in cases]


class EngineFactory(Protocol):
    """Makes and starts the engine under test; every one a test makes shares its server state."""

    async def __call__(self, *, lease_seconds: float = DEFAULT_LEASE) -> Engine: ...


class TransportFactory(Protocol):
    """Makes and starts a transport of the engine under test; all share one store."""

    async def __call__(self, *, lease_seconds: float = DEFAULT_LEASE) -> MessageTransport: ...


async def _engines(case: EngineCase, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    made: list[Engine] = []

    async def make(*, lease_seconds: float = DEFAULT_LEASE) -> Engine:
        engine = registry.open_url(case.url(tmp_path), lease_seconds=lease_seconds, **case.options)
        made.append(engine)
        for part in (engine.transport, engine.store, engine.results):
            if part is not None:
                await part.startup()
        return engine

    yield make
    for engine in made:
        drop = getattr(engine.transport, "delete_topology", None)  # RabbitMQ queues outlive a test
        if drop is not None:
            await drop()
        for part in (engine.results, engine.store, engine.transport):
            if part is not None:
                await part.shutdown()
    if case.cleanup is not None:
        await case.cleanup(tmp_path)


@pytest.fixture(params=_params(TRANSPORT_CASES))
async def make_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[EngineFactory]:
    """A factory of started engines of each engine that moves messages."""
    async for factory in _engines(request.param, tmp_path):
        yield factory


@pytest.fixture
async def make_transport(make_engine: EngineFactory) -> TransportFactory:
    """A factory of started transports of each engine."""

    async def make(*, lease_seconds: float = DEFAULT_LEASE) -> MessageTransport:
        transport = (await make_engine(lease_seconds=lease_seconds)).transport
        assert transport is not None
        return transport

    return make


@pytest.fixture
async def transport(make_transport: TransportFactory) -> MessageTransport:
    """A started transport of each engine, with a lease that does not run out in a test."""
    return await make_transport()


@pytest.fixture(params=_params([c for c in TRANSPORT_CASES if c.plant is not None]))
async def planted(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Engine, Any]]:
    """A started engine and a function that plants one malformed entry in one of its queues."""
    case: EngineCase = request.param
    assert case.plant is not None
    plant = case.plant
    async for make in _engines(case, tmp_path):
        engine = await make()
        yield engine, functools.partial(plant, engine, tmp_path)


@pytest.fixture(params=_params(STATE_CASES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """A started state store of each engine."""
    async for make in _engines(request.param, tmp_path):
        made = (await make()).store
        assert made is not None
        yield made


@pytest.fixture(params=_params(STATE_CASES))
async def result_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ResultBackend]:
    """A started result store of each engine."""
    async for make in _engines(request.param, tmp_path):
        made = (await make()).results
        assert made is not None
        yield made
