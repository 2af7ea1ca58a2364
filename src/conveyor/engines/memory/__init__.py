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
    """The in-process transport, store and result store (`url` carries no options).

    Its lease is 30 s by default, not `DEFAULT_LEASE_SECONDS`: it is renewed on the one event
    loop (`LocalQueue` is not `thread_safe`), and no other process could take over anyway.
    """
    return Engine(
        LocalQueue(lease_seconds or 30.0),
        MemoryStore(),
        MemoryResultBackend(max_stored_results, default_ttl=result_ttl),
    )
