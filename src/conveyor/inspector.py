"""Read-only views of a broker for the CLI and the dashboard: tasks, queues, workers, active."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.engines.base import DeadLetter, QueueStats
from conveyor.errors import SerializationError
from conveyor.options import DEFAULT_QUEUE, TaskOptions
from conveyor.recent import SIGNED_RECENT, RecentTask, shown
from conveyor.scheduler import ScheduleInfo, Scheduler

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["ActiveTask", "Inspector", "TaskCounts", "TaskInfo", "WorkerInfo"]


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A registered task: its name, labels (its routes' and its own), parameters and the queue
    it is sent to."""

    name: str
    labels: dict[str, Any]
    parameters: list[str]
    queue: str = DEFAULT_QUEUE


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
    concurrency: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    running_names: list[str] = field(default_factory=list)

    def consumes(self, queue: str) -> bool:
        """True when this worker takes messages from `queue` (no queues listed: every queue)."""
        return not self.queues or queue in self.queues


@dataclass(frozen=True, slots=True)
class ActiveTask:
    """A task running on a live worker, from the worker's last heartbeat."""

    worker: str
    task_id: str
    task_name: str


@dataclass(slots=True)
class TaskCounts:
    """Cluster-wide counts of one task name, summed from every worker's published stats.

    Attributes:
        counters: received / succeeded / failed / retried / cancelled.
        duration_sum: seconds all counted runs took.
        buckets: runs per duration bucket (`conveyor.worker.stats.BUCKETS`, then the rest).
    """

    counters: dict[str, int] = field(default_factory=dict)
    duration_sum: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)


class Inspector:
    """Queries over one broker; every method is read-only."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def tasks(self) -> list[TaskInfo]:
        """Registered tasks, by name."""
        found = []
        for name, task in sorted(self.broker.get_all_tasks().items()):
            hints = task.arg_types or {}  # resolved: "x: int", not "x: 'int'" under PEP 563
            params = [
                str(p.replace(annotation=hints[p.name]) if p.name in hints else p)
                for p in task.call_signature.parameters.values()
            ]
            labels = self._labels(name)
            found.append(TaskInfo(name, labels, params, TaskOptions.parse(labels, name).queue))
        return found

    def queue_of(self, task_name: str) -> str:
        """The queue a call of `task_name` without labels of its own is sent to."""
        return TaskOptions.parse(self._labels(task_name), task_name).queue

    def _labels(self, task_name: str) -> dict[str, Any]:
        """Its routes' labels, then its registered task's (as `Broker.build_message` merges)."""
        task = self.broker.find_task(task_name)
        return {**self.broker.route_labels(task_name), **(task.labels if task else {})}

    async def queues(self) -> list[QueueStats]:
        """Counts per queue."""
        await self.broker.ensure_started()
        return sorted(await self.broker.transport.queue_stats(), key=lambda q: q.name)

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is live."""
        await self.broker.ensure_started()
        now = time.time()
        return [
            WorkerInfo(
                name=beat.name,
                host=beat.host,
                pid=beat.pid,
                queues=beat.queues,
                running=beat.running,
                processed=beat.processed,
                uptime=now - beat.started,
                rss_mb=beat.rss_mb,
                concurrency=beat.concurrency,
                counters=beat.counters,
                running_names=beat.running_names,
            )
            for beat in await self.broker.state.heartbeats()
        ]

    async def active(self) -> list[ActiveTask]:
        """Every task running on a live worker, from the heartbeats (a worker beats within a
        second of a task's start)."""
        found = []
        for w in await self.workers():
            names = w.running_names if len(w.running_names) == len(w.running) else []
            for i, task_id in enumerate(w.running):
                found.append(ActiveTask(w.name, task_id, names[i] if names else "?"))
        return found

    async def task_counts(self) -> dict[str, TaskCounts]:
        """Counters and duration histograms by task name, from the workers' `stats:` keys."""
        await self.broker.ensure_started()
        found: dict[str, TaskCounts] = {}
        for key, raw in (await self.broker.state.counts()).items():
            kind, _, rest = key.partition(":")
            try:
                value = int(raw)
                if kind == "bucket":
                    index, _, name = rest.partition(":")
                    counts = found.setdefault(name, TaskCounts())
                    counts.buckets[int(index)] = counts.buckets.get(int(index), 0) + value
                elif kind == "duration_us":
                    found.setdefault(rest, TaskCounts()).duration_sum += value / 1_000_000
                else:
                    found.setdefault(rest, TaskCounts()).counters[kind] = value
            except ValueError:
                continue  # not ours
        return dict(sorted(found.items()))

    async def recent(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(recent, failed) tasks the workers reported, newest first, as JSON objects (at most
        `RECENT_SHOWN` of each, the latest run of each task, as `worker_lists` reads them)."""
        recent: dict[str, dict[str, Any]] = {}
        failed: dict[str, dict[str, Any]] = {}
        for runs, failures in await self.worker_lists():
            _latest(recent, runs)
            _latest(failed, failures)
        return _newest(recent), _newest(failed)

    async def worker_lists(self) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Each worker's (recent, failed) runs as it published them, as JSON objects cut as
        `conveyor.recent` says (a retried task has a run per attempt).

        A list not signed with the broker's secret key (when one is set), and an entry whose
        fields have the wrong types, are left out: what is shown or sent again is what a worker
        of this app wrote.
        """
        await self.broker.ensure_started()
        seal = self.broker.signer.derive(SIGNED_RECENT)
        found = []
        for raw in await self.broker.state.recent():
            try:
                lists = _LISTS.decode(seal.verify(raw))
            except (SerializationError, msgspec.DecodeError, msgspec.ValidationError):
                continue  # written by someone without the key, or by another version
            except RecursionError:
                continue  # nested deeper than any worker writes
            found.append((_valid(lists.get("recent", [])), _valid(lists.get("failed", []))))
        return found

    async def schedules(self) -> list[ScheduleInfo]:
        """Label and stored schedules with their next fire time."""
        return await Scheduler(self.broker).list()

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        await self.broker.ensure_started()
        return await self.broker.transport.dead_letters(limit)

    def describe(self, letter: DeadLetter) -> str:
        """The task name inside a dead letter's body, or "?" when it cannot be read."""
        try:
            return self.broker.codec.decode(letter.body).task_name
        except Exception:
            return "?"


def _valid(entries: list[Any]) -> list[dict[str, Any]]:
    """The well-formed entries, cut as every record shown is."""
    valid = []
    for raw in entries:
        try:
            valid.append(shown(msgspec.convert(raw, RecentTask)))
        except msgspec.ValidationError:
            continue
    return valid


def _latest(into: dict[str, dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    """Keep the latest entry of each task id (a retried task may have run on two workers)."""
    for entry in entries:
        known = into.get(entry["task_id"])
        if known is None or _when(entry) >= _when(known):
            into[entry["task_id"]] = entry


_LISTS = msgspec.json.Decoder(dict[str, list[Any]])
#: Tasks `Inspector.recent` returns at most in each list, over all workers.
RECENT_SHOWN = 100


def _when(entry: dict[str, Any]) -> float:
    return float(entry.get("finished") or entry.get("started") or 0.0)


def _newest(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries.values(), key=_when, reverse=True)[:RECENT_SHOWN]
