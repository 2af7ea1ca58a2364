"""A worker's counters and recent tasks, kept in memory and published to the broker in batches.

The hot path only bumps dictionaries (`started`, `ended`); the consumer's stats loop calls
`flush` every second or so, which adds the deltas to cluster-wide counters with `incr` and
writes this worker's recent tasks as one key. `conveyor web`'s `/metrics` and the dashboard read
them back (see `conveyor.inspector`), so the numbers are right with any number of processes.

The counters (`conveyor.state` keeps them as `stats:<counter>:<name>`, `<name>` a task name
that may contain colons): `received` / `succeeded` / `failed` / `retried` / `cancelled`,
`duration_us` (the sum of run times in microseconds) and `bucket:<i>` (runs that took longer
than `BUCKETS[i-1]` and at most `BUCKETS[i]`; the last index counts the rest), so the histogram
is rebuilt by summing. The recent tasks are JSON `{"recent": [...], "failed": [...]}`.

A message that ends without having started (its task name is unknown to the worker, e.g. from a
foreign producer) is counted under `UNKNOWN_TASK`, so stray names add no keys or series.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from conveyor.options import DEFAULT_QUEUE
from conveyor.recent import ERROR_LIMIT, NAME_LIMIT, RECENT_SIZE, TRACEBACK_LIMIT, shown_call
from conveyor.result import TaskStatus
from conveyor.serializers import Signer
from conveyor.state import BUCKETS, COUNTERS, State
from conveyor.workflows import WORKFLOW_LABEL

if TYPE_CHECKING:
    from conveyor.message import TaskMessage
    from conveyor.result import TaskResult

__all__ = ["UNKNOWN_TASK", "WorkerStats"]

#: The task name unknown tasks are counted under.
UNKNOWN_TASK = "<unknown>"

#: Index of each counter in a task name's row; the duration sum and the buckets follow.
_COLUMN = {
    TaskStatus.SUCCEEDED: 1,
    TaskStatus.FAILED: 2,
    TaskStatus.RETRYING: 3,
    TaskStatus.CANCELLED: 4,
}
_DURATION = len(COUNTERS)
_FIRST_BUCKET = _DURATION + 1
_ROW = _FIRST_BUCKET + len(BUCKETS) + 1


class _Entry:
    """One recent run: kept as references on the hot path, turned into JSON at flush."""

    __slots__ = ("finished", "message", "queue", "result", "started")

    def __init__(self, message: TaskMessage, started: float, queue: str) -> None:
        self.message = message
        self.started = started
        self.queue = queue
        self.result: TaskResult[Any] | None = None
        self.finished = 0.0


class WorkerStats:
    """Counters and recent tasks of one worker process since it started.

    Per task name a row of integers: the `COUNTERS`, the duration sum in microseconds and the
    histogram buckets. `flush` publishes what changed since the last flush.
    """

    def __init__(self, worker: str, seal: Signer | None = None) -> None:
        self.worker = worker
        self.seal = seal or Signer(None)
        self._rows: dict[str, list[int]] = {}
        self._flushed: dict[str, list[int]] = {}
        self._recent: deque[_Entry] = deque(maxlen=RECENT_SIZE)
        self._failed: deque[_Entry] = deque(maxlen=RECENT_SIZE)
        self._running: dict[str, _Entry] = {}
        self._dirty = False

    @property
    def totals(self) -> dict[str, int]:
        """This process's counts over every task name (for its heartbeat)."""
        rows = self._rows.values()
        return {name: sum(row[i] for row in rows) for i, name in enumerate(COUNTERS)}

    # -- the hot path: a few list and dict operations --------------------------------------

    def _row(self, name: str) -> list[int]:
        row = self._rows.get(name)
        if row is None:
            row = self._rows[name] = [0] * _ROW
            self._flushed[name] = [0] * _ROW
        return row

    def started(self, message: TaskMessage, queue: str = DEFAULT_QUEUE) -> None:
        """Count a message of `queue` that begins to run and list it as running."""
        self._row(message.task_name)[0] += 1
        entry = _Entry(message, time.time(), queue)
        self._recent.append(entry)
        self._running[message.task_id] = entry
        self._dirty = True

    def ended(self, message: TaskMessage, result: TaskResult[Any]) -> None:
        """Count how a run ended (a retry, or a final result) and record it."""
        column = _COLUMN.get(result.status)
        if column is None:
            return
        entry = self._running.pop(message.task_id, None)
        name = message.task_name
        if entry is None:  # failed before it started (an unknown task name)
            entry, name = _Entry(message, time.time(), ""), UNKNOWN_TASK
            self._recent.append(entry)
        row = self._row(name)
        elapsed = result.execution_time
        row[column] += 1
        row[_DURATION] += int(elapsed * 1_000_000)
        row[_FIRST_BUCKET + bisect.bisect_left(BUCKETS, elapsed)] += 1
        entry.result, entry.finished = result, time.time()
        if column == 2:
            self._failed.append(entry)
        self._dirty = True

    def done(self, task_id: str) -> None:
        """Forget a run that left without `ended` (the worker failed to settle or handed it back).

        Called after every run, so the running list never keeps a task that is not running.
        """
        entry = self._running.pop(task_id, None)
        if entry is not None:
            with contextlib.suppress(ValueError):  # already pushed out by newer runs
                self._recent.remove(entry)  # it is delivered again: shown again when it runs
            self._dirty = True

    # -- publishing --------------------------------------------------------------------------

    async def flush(self, state: State) -> None:
        """Add what changed since the last flush to the broker's counters, and publish the
        recent tasks.

        A delta whose `incr` fails stays for the next flush, so nothing is lost or counted
        twice.
        """
        for name, row in list(self._rows.items()):
            done = self._flushed[name]
            for index, value in enumerate(row):
                delta = value - done[index]
                if delta:
                    await state.add_count(_key(index), name, delta)
                    done[index] += delta
        if self._dirty:
            self._dirty = False
            await state.put_recent(self.worker, self.seal.sign(self.recent_json()))

    def recent_json(self) -> bytes:
        """This worker's recent and failed tasks as JSON (arguments cut when they are long)."""
        return json.dumps(
            {
                "recent": [_public(e, self.worker) for e in self._recent],
                "failed": [_public(e, self.worker) for e in self._failed],
            },
            default=repr,
        ).encode()


def _key(index: int) -> str:
    if index < _DURATION:
        return COUNTERS[index]
    if index == _DURATION:
        return "duration_us"
    return f"bucket:{index - _FIRST_BUCKET}"


def _public(entry: _Entry, worker: str) -> dict[str, Any]:
    """An entry as JSON, its call cut as every recent record is (`conveyor.recent`)."""
    message, result = entry.message, entry.result
    labels = {k: v for k, v in message.labels.items() if k != WORKFLOW_LABEL}
    shown: dict[str, Any] = {
        "task_id": message.task_id,
        "task_name": message.task_name[:NAME_LIMIT],
        "status": "running" if result is None else str(result.status),
        "queue": entry.queue[:NAME_LIMIT],
        "attempt": message.attempt,
        "worker": worker,
        "started": entry.started,
        **shown_call(message.args, message.kwargs, labels),
    }
    if result is not None:
        shown.update(finished=entry.finished, duration=result.execution_time)
        if result.is_err:
            shown["error"] = f"{result.error_type}: {result.error_message}"[:ERROR_LIMIT]
            shown["traceback"] = (result.error_traceback or "")[-TRACEBACK_LIMIT:]
    return shown
