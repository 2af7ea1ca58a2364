"""pytest plugin (entry point `conveyor`): fixtures for a temporary SQLite broker and a worker.

    async def test_add(conveyor_broker, conveyor_worker): ...

`conveyor_broker` is a started `SqliteBroker` on a file in `tmp_path`; register tasks on it in
the test. `conveyor_worker` runs a worker for it in the test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.brokers import SqliteBroker
from conveyor.testing import worker
from conveyor.worker.consumer import Worker


@pytest.fixture
async def conveyor_broker(tmp_path: Path) -> AsyncIterator[SqliteBroker]:
    """A started SQLite broker on a temporary file, shut down after the test."""
    broker = SqliteBroker(str(tmp_path / "conveyor-test.db"), lease_seconds=5.0)
    await broker.startup()
    yield broker
    await broker.shutdown()


@pytest.fixture
async def conveyor_worker(conveyor_broker: SqliteBroker) -> AsyncIterator[Worker]:
    """A worker for `conveyor_broker` running in the test's event loop."""
    async with worker(conveyor_broker) as running:
        yield running
