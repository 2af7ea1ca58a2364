"""How the contract suites make each engine: one `EngineCase` per engine (a module each here).

A case gives the engine's URL for one test (its own file or key prefix), the options
`conveyor.engines.registry.open_url` takes besides the lease, how to remove what a test left on
a server, and how to plant one malformed entry in a queue the way a foreign writer with access
to the server would (for the "one bad entry never stalls a batch" test). A network engine's URL
function skips the test when its server is not there (fails under CI; see `tests/servers.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.engines.base import Engine

#: Writes one malformed entry into queue `queue` of the engine under test and returns a word
#: that the problem of the delivery it becomes is expected to contain.
Planter = Callable[[Engine, Path, str], Awaitable[str]]


@dataclass(frozen=True)
class EngineCase:
    """One engine as the contract suites see it."""

    name: str
    url: Callable[[Path], str]
    options: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[Path], Awaitable[None]] | None = None
    plant: Planter | None = None


def test_prefix(tmp_path: Path, kind: str) -> str:
    """One key, stream or queue prefix per test, shared by everything the test makes."""
    from tests.servers import unique_prefix

    marker = tmp_path / f"{kind}-prefix"
    if not marker.exists():
        marker.write_text(unique_prefix())
    return marker.read_text()
