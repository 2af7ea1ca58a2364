"""The memory engine (`memory://`): queues, state and results in this process, for tests and
demos. Nothing is shared with another process or survives a restart."""

from __future__ import annotations

from conveyor.engines.base import Engine
from conveyor.engines.localqueue import LocalQueue
from conveyor.engines.memory.results import MemoryResultBackend
from conveyor.engines.memory.store import MemoryStore

__all__ = ["MemoryResultBackend", "MemoryStore", "open_engine"]


def open_engine(
    url: str = "memory://",
    *,
    lease_seconds: float | None = None,
    max_stored_results: int = 1000,
    result_ttl: float | None = 24 * 3600.0,
) -> Engine:
    """The in-process transport, store and result store (`url` carries no options)."""
    return Engine(
        LocalQueue(lease_seconds or 30.0),
        MemoryStore(),
        MemoryResultBackend(max_stored_results, default_ttl=result_ttl),
    )
