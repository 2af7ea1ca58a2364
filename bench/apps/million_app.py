"""The million-task scenario's app (`bench.million`): one no-op task, results kept for a TTL.

Reads `BENCH_CONVEYOR_URL` (a Redis URL) and `BENCH_RESULT_TTL` (seconds, or "none" to keep
results forever), so the scenario and the worker it starts build the same broker.
"""

from __future__ import annotations

import os

from conveyor import RedisBroker

_TTL = os.environ.get("BENCH_RESULT_TTL", "60")

broker = RedisBroker(
    os.environ["BENCH_CONVEYOR_URL"],
    result_ttl=None if _TTL.lower() == "none" else float(_TTL),
)


@broker.task
async def noop() -> bool:
    """Do nothing."""
    return True
