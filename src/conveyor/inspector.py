"""Read-only views of a broker for the CLI and the dashboard: tasks, queues, workers, active."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.message import TaskMessage
from conveyor.transports.base import DeadLetter, QueueStats

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["Inspector", "TaskInfo", "WorkerInfo"]


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A registered task: its name, labels and parameters."""

    name: str
    labels: dict[str, Any]
    parameters: list[str]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker process from its last heartbeat."""

    name: str
    host: str
    pid: int
    queues: list[str]
    running: list[str]
    processed: int
    uptime: float
    rss_mb: float


class Inspector:
    """Queries over one broker; every method is read-only."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def tasks(self) -> list[TaskInfo]:
        """Registered tasks, by name."""
        found = []
        for name, task in sorted(self.broker.get_all_tasks().items()):
            params = [str(p) for p in task.call_signature.parameters.values()]
            found.append(TaskInfo(name, {**self.broker.route_labels(name), **task.labels}, params))
        return found

    async def queues(self) -> list[QueueStats]:
        """Counts per queue."""
        await self.broker.ensure_started()
        return sorted(await self.broker.transport.queue_stats(), key=lambda q: q.name)

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is live."""
        await self.broker.ensure_started()
        found = []
        for raw in (await self.broker.transport.kv_scan("worker:")).values():
            try:
                beat = json.loads(raw)
                found.append(
                    WorkerInfo(
                        name=beat["name"],
                        host=beat["host"],
                        pid=int(beat["pid"]),
                        queues=list(beat["queues"]),
                        running=list(beat["running"]),
                        processed=int(beat["processed"]),
                        uptime=time.time() - float(beat["started"]),
                        rss_mb=float(beat.get("rss_mb", 0.0)),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # a heartbeat from another version: skip rather than fail the listing
        return sorted(found, key=lambda w: w.name)

    async def active(self) -> list[tuple[str, str]]:
        """(worker, task id) of every running task, from the heartbeats."""
        return [(w.name, task_id) for w in await self.workers() for task_id in w.running]

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        await self.broker.ensure_started()
        return await self.broker.transport.dead_letters(limit)

    def describe(self, letter: DeadLetter) -> str:
        """The task name inside a dead letter's body, or "?" when it cannot be read."""
        try:
            body = self.broker.signer.verify(letter.body)
            return self.broker.serializer.decode(body, TaskMessage).task_name
        except Exception:
            return "?"
