"""The app of the large-count scenarios (`bench.million`, `bench.pg_bloat`): one no-op task,
results kept for a TTL.

Reads `BENCH_CONVEYOR_URL` (a Redis or a PostgreSQL URL) and `BENCH_RESULT_TTL` (seconds, or
"none" to keep results forever), so the scenario and the worker it starts build the same broker.
"""

from __future__ import annotations

import os

from conveyor import PostgresBroker, RedisBroker

_URL = os.environ["BENCH_CONVEYOR_URL"]
_TTL = os.environ.get("BENCH_RESULT_TTL", "60")
_ENGINE = PostgresBroker if _URL.startswith("postgres") else RedisBroker

broker = _ENGINE(_URL, result_ttl=None if _TTL.lower() == "none" else float(_TTL))


@broker.task
async def noop() -> bool:
    """Do nothing."""
    return True
