"""The dashboard's snapshot: queues, workers, counters, recent and failed tasks, dead letters and
schedules, as one JSON object."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from conveyor.broker import Broker
from conveyor.inspector import Inspector
from conveyor.recent import ERROR_LIMIT, shown_call
from conveyor.result import TaskStatus
from conveyor.web.state import WebState

__all__ = ["SharedOverview", "overview"]

DEAD_LETTERS_SHOWN = 50


async def overview(broker: Broker, inspector: Inspector, state: WebState) -> dict[str, Any]:
    """Everything the dashboard shows, read from the broker now."""
    counts = await inspector.task_counts()
    recent, failed = await inspector.recent()
    merged = state.merged(recent)
    await _refresh_waiting(broker, merged)
    return {
        "time": time.time(),
        "broker": broker.transport.safe_url,
        "queues": [asdict(q) for q in await inspector.queues()],
        "workers": [asdict(w) for w in await inspector.workers()],
        "tasks": {
            name: {**c.counters, "duration_sum": c.duration_sum} for name, c in counts.items()
        },
        "registered": [asdict(t) for t in inspector.tasks()],
        "recent": merged,
        "failed": failed,
        "dead_letters": [
            {
                "task_id": letter.task_id,
                "queue": letter.queue,
                "task_name": inspector.describe(letter),
                "reason": letter.reason[:ERROR_LIMIT],
                "failed_at": letter.failed_at,
            }
            for letter in (await inspector.dead_letters(DEAD_LETTERS_SHOWN))
        ],
        "schedules": await schedules(inspector),
    }


class SharedOverview:
    """One snapshot at a time for every dashboard client, read again once it is `max_age` old.

    Each open dashboard asks once a second; without sharing, N tabs would cost N reads of the
    broker per second.
    """

    def __init__(
        self, broker: Broker, inspector: Inspector, state: WebState, max_age: float
    ) -> None:
        self.broker, self.inspector, self.state = broker, inspector, state
        self.max_age = max_age
        self._lock = asyncio.Lock()
        self._data: dict[str, Any] | None = None
        self._read_at = 0.0

    async def get(self) -> dict[str, Any]:
        """The current snapshot (callers must not change it)."""
        async with self._lock:
            if self._data is None or time.monotonic() - self._read_at >= self.max_age:
                self._data = await overview(self.broker, self.inspector, self.state)
                self._read_at = time.monotonic()
            return self._data


async def _refresh_waiting(broker: Broker, entries: list[dict[str, Any]]) -> None:
    """Sent tasks no worker reported yet: read their status (queued, scheduled, cancelled...)."""
    for entry in entries:
        if "sent" in entry and "worker" not in entry:
            status = await broker.task_status(entry["task_id"])
            if status is not None:
                entry["status"] = str(status)
                if status is TaskStatus.CANCELLED:
                    entry["finished"] = entry["sent"]


async def schedules(inspector: Inspector) -> list[dict[str, Any]]:
    """Label and stored schedules with their next run (unix time), their calls cut."""
    return [
        {
            "id": info.id,
            "task_name": info.task_name,
            "schedule": info.schedule,
            **shown_call(info.args, info.kwargs, {}),
            "stored": info.stored,
            "next_run": info.next_fire.timestamp() if info.next_fire else None,
        }
        for info in await inspector.schedules()
    ]
