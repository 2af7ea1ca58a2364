"""The dashboard's snapshot: queues, workers, counters, recent and failed tasks (with the progress
of running ones), dead letters and schedules, as one JSON object; each snapshot read also feeds
the dashboard's stored history (`conveyor.history`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from conveyor.broker import Broker
from conveyor.errors import SerializationError
from conveyor.history import History, Point
from conveyor.inspector import Inspector
from conveyor.recent import ERROR_LIMIT, shown_call, shown_value
from conveyor.result import TaskStatus
from conveyor.web.state import WebState

__all__ = ["SharedOverview", "overview", "point_of", "progress_of", "selected"]

DEAD_LETTERS_SHOWN = 50
#: Characters of a running task's progress shown in its row (as JSON; longer: its start).
PROGRESS_LIMIT = 200
_MAX_COUNT = 2**63 - 1


async def overview(broker: Broker, inspector: Inspector, state: WebState) -> dict[str, Any]:
    """Everything the dashboard shows, read from the broker now."""
    counts = await inspector.task_counts()
    recent, failed = await inspector.recent()
    merged = state.merged(recent)
    await _refresh_waiting(broker, merged)
    merged = await _with_progress(broker, merged)
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
    broker per second. A task sent through this process since the last read makes the next
    caller read again, so that it shows at once.
    """

    def __init__(
        self,
        broker: Broker,
        inspector: Inspector,
        state: WebState,
        max_age: float,
        history: History | None = None,
    ) -> None:
        self.broker, self.inspector, self.state = broker, inspector, state
        self.max_age, self.history = max_age, history
        self._lock = asyncio.Lock()
        self._data: dict[str, Any] | None = None
        self._read_at = 0.0
        self._sends = 0

    async def get(self) -> dict[str, Any]:
        """The current snapshot (callers must not change it)."""
        async with self._lock:
            data = self._data
            fresh = data is not None and time.monotonic() - self._read_at < self.max_age
            if data is None or not fresh or self._sends != self.state.sends:
                self._sends = self.state.sends  # a task sent since shows at once
                data = self._data = await overview(self.broker, self.inspector, self.state)
                self._read_at = time.monotonic()
                if self.history is not None:
                    await self.history.record(point_of(data))
            return data


def point_of(snapshot: dict[str, Any]) -> Point:
    """The history's point of a snapshot: the cluster's counters and sizes at its time."""
    totals = dict.fromkeys(("succeeded", "failed", "retried", "cancelled"), 0)
    for counts in snapshot["tasks"].values():
        for key in totals:
            totals[key] += counts.get(key, 0)
    return Point(
        t=snapshot["time"],
        waiting=_count(sum(q["ready"] + q["scheduled"] for q in snapshot["queues"])),
        running=_count(sum(len(w["running"]) for w in snapshot["workers"])),
        workers=_count(len(snapshot["workers"])),
        **{key: _count(value) for key, value in totals.items()},
    )


def _count(value: int) -> int:
    """A count as a point holds it: counters in the store are not signed, so they may be any
    integer."""
    return min(max(value, 0), _MAX_COUNT)


def selected(snapshot: dict[str, Any], name: str, state: str, queue: str) -> dict[str, Any]:
    """The snapshot with only the recent and failed tasks whose name contains `name` (any
    case) or whose id starts with it, whose status is `state` and whose queue is `queue`
    (each when not empty)."""
    if not (name or state or queue):
        return snapshot
    needle = name.lower()

    def keep(entry: dict[str, Any]) -> bool:
        return (
            (not state or entry.get("status") == state)
            and (not queue or entry.get("queue") == queue)
            and (needle in entry["task_name"].lower() or entry["task_id"].startswith(name))
        )

    picked = {key: [e for e in snapshot[key] if keep(e)] for key in ("recent", "failed")}
    return {**snapshot, **picked}


async def _with_progress(broker: Broker, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries, each running one with its last progress report (cut to `PROGRESS_LIMIT`)."""
    running = [i for i, entry in enumerate(entries) if entry["status"] == TaskStatus.RUNNING]
    found = await asyncio.gather(*(progress_of(broker, entries[i]["task_id"]) for i in running))
    entries = list(entries)
    for i, progress in zip(running, found, strict=True):
        if progress is not None:
            entries[i] = {**entries[i], "progress": progress}
    return entries


async def progress_of(
    broker: Broker, task_id: str, limit: int = PROGRESS_LIMIT
) -> dict[str, Any] | None:
    """A task's last progress report as shown (`conveyor.recent.shown_value`), or None when it
    has none, or none signed with the key."""
    try:
        progress = await broker.get_progress(task_id)
    except SerializationError:
        return None  # not signed with the key: not shown
    return None if progress is None else shown_value(progress, limit)


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
