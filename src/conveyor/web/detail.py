"""The task and worker pages' data: what the app still knows of one task or one worker.

A task is read from the result store (its result and progress), its status, the runs the
workers still list (one per attempt), the dead-letter queue and the tasks this web process sent;
a worker from its heartbeat and its recent list. All of it was written by other processes, so
every field shown is cut as `conveyor.recent` cuts a record: a page stays a few tens of KB
whatever a task took or returned.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Final

from conveyor.broker import Broker
from conveyor.errors import SerializationError
from conveyor.inspector import RECENT_SHOWN, Inspector, WorkerInfo
from conveyor.message import TaskMessage
from conveyor.recent import (
    ARGS_LIMIT,
    ERROR_LIMIT,
    NAME_LIMIT,
    TRACEBACK_LIMIT,
    shown_call,
    shown_value,
)
from conveyor.result import TaskResult
from conveyor.web.overview import progress_of
from conveyor.web.state import WebState
from conveyor.workflows import WORKFLOW_LABEL, following, step_of

__all__ = ["task_detail", "worker_detail"]

#: Dead letters searched for a task's message.
LETTERS_SEARCHED: Final = 1000
#: Following steps of a workflow step whose status is read.
NEXT_SHOWN: Final = 20
#: Queues and running tasks of a worker shown.
LIST_SHOWN: Final = 100
_RUN_FIELDS = (
    "attempt",
    "worker",
    "status",
    "started",
    "finished",
    "duration",
    "error",
    "traceback",
)
_Lists = list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
_FAILED_OR_UNKNOWN = (None, "failed")


async def task_detail(
    broker: Broker, inspector: Inspector, state: WebState, task_id: str
) -> dict[str, Any] | None:
    """Everything known of `task_id`, or None when nothing is."""
    lists, result, status = await asyncio.gather(
        inspector.worker_lists(), _result(broker, task_id), _status(broker, task_id)
    )
    runs, sent = _runs(lists, task_id), state.find(task_id)
    letter = None
    if status in _FAILED_OR_UNKNOWN:  # a dead-lettered task: failed, or unknown to the store
        letter = await _dead_letter(broker, inspector, task_id)
    workflow = await _workflow(broker, lists, task_id, result, letter)
    if not (runs or result or status or letter or sent or workflow):
        return None
    latest = runs[-1] if runs else (sent or {})
    message = letter[1] if letter else None
    return {
        "task_id": task_id,
        "task_name": _name(latest, result, message, workflow),
        "status": status or latest.get("status") or "unknown",
        "queue": latest.get("queue") or (letter[0]["queue"] if letter else ""),
        "call": _call(latest, message),
        "progress": await progress_of(broker, task_id, ARGS_LIMIT),
        "result": _shown_result(result) if result else None,
        "attempts": _attempts(runs, result),
        "sent": sent["sent"] if sent else None,
        "dead_letter": letter[0] if letter else None,
        "workflow": workflow,
    }


async def _result(broker: Broker, task_id: str) -> TaskResult[Any] | None:
    try:
        return await broker.get_handle(task_id).get_result()
    except SerializationError:
        return None  # not signed with the key, or unreadable: shown as unknown


async def _status(broker: Broker, task_id: str) -> str | None:
    try:
        status = await broker.task_status(task_id)
    except SerializationError:
        return None
    return None if status is None else str(status)


async def _dead_letter(
    broker: Broker, inspector: Inspector, task_id: str
) -> tuple[dict[str, Any], TaskMessage | None] | None:
    """The dead letter of `task_id` as shown, and its message when it can be read."""
    for letter in await inspector.dead_letters(LETTERS_SEARCHED):
        if letter.task_id == task_id:
            shown = {
                "queue": letter.queue[:NAME_LIMIT],
                "reason": letter.reason[:ERROR_LIMIT],
                "failed_at": letter.failed_at,
            }
            try:
                return shown, broker.codec.decode(letter.body)
            except Exception:  # unsigned or malformed: its reason says why
                return shown, None
    return None


def _name(
    latest: dict[str, Any],
    result: TaskResult[Any] | None,
    message: TaskMessage | None,
    workflow: dict[str, Any] | None,
) -> str:
    if latest.get("task_name"):
        return str(latest["task_name"])
    if result is not None:
        return result.task_name[:NAME_LIMIT]
    if message is not None:
        return message.task_name[:NAME_LIMIT]
    if workflow is not None and workflow["path"] is None:
        return str(workflow["kind"] or "workflow")
    return ""


def _call(latest: dict[str, Any], message: TaskMessage | None) -> dict[str, Any] | None:
    """The task's arguments and labels, cut: from its latest run, else its dead letter."""
    if "args" in latest:
        names = ("args", "kwargs", "labels", "args_text", "labels_text")
        return {name: latest.get(name) for name in names}
    if message is not None:
        return shown_call(message.args, message.kwargs, _labels(message.labels))
    return None


def _labels(labels: dict[str, Any]) -> dict[str, Any]:
    """Labels without `workflow` (the rest of the workflow: shown as its steps instead)."""
    return {key: value for key, value in labels.items() if key != WORKFLOW_LABEL}


def _shown_result(result: TaskResult[Any]) -> dict[str, Any]:
    error = None
    if result.error_type is not None:
        error = f"{result.error_type}: {result.error_message or ''}"[:ERROR_LIMIT]
    labels = shown_call([], {}, _labels(result.labels))
    return {
        "status": str(result.status),
        "return_value": None if result.is_err else shown_value(result.return_value),
        "error": error,
        "traceback": (result.error_traceback or "")[-TRACEBACK_LIMIT:] or None,
        "execution_time": result.execution_time,
        "attempts": result.attempts,
        "started": result.started_at.timestamp() if result.started_at else None,
        "finished": result.finished_at.timestamp() if result.finished_at else None,
        "worker": (result.worker or "")[:NAME_LIMIT],
        "labels": labels["labels"],
        "labels_text": labels.get("labels_text"),
    }


def _attempts(runs: list[dict[str, Any]], result: TaskResult[Any] | None) -> list[dict[str, Any]]:
    """A row per run the workers list, and the result's last attempt when no list has it (a
    workflow's own result, which no worker ran, adds none)."""
    rows = [{name: run.get(name) for name in _RUN_FIELDS} for run in runs]
    if result is None or not result.worker or "failed_step" in result.labels:
        return rows
    if result.attempts not in {row["attempt"] for row in rows}:
        shown = _shown_result(result)
        last = {"attempt": result.attempts, "duration": result.execution_time}
        rows.append({name: last.get(name, shown.get(name)) for name in _RUN_FIELDS})
    return rows


def _runs(lists: _Lists, task_id: str) -> list[dict[str, Any]]:
    """Every run of `task_id` the workers list (one per attempt and worker), oldest first."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for runs, failures in lists:
        for entry in [*runs, *failures]:
            if entry["task_id"] == task_id:
                found[entry["worker"], entry["attempt"], entry["started"]] = entry
    return sorted(found.values(), key=lambda e: (e["started"], e["attempt"]))


async def _workflow(
    broker: Broker,
    lists: _Lists,
    task_id: str,
    result: TaskResult[Any] | None,
    letter: tuple[dict[str, Any], TaskMessage | None] | None,
) -> dict[str, Any] | None:
    """The workflow `task_id` is a step of (or is), with its steps the workers list and,
    when its label is known, the steps that follow it."""
    step = step_of(task_id)
    workflow_id = step[0] if step else task_id
    steps: dict[str, dict[str, Any]] = {}
    for entry in (entry for runs, failures in lists for entry in [*runs, *failures]):
        of, known = step_of(entry["task_id"]), steps.get(entry["task_id"])
        if of is None or of[0] != workflow_id or (known and known["started"] > entry["started"]):
            continue  # not a step of this workflow, or an earlier attempt
        steps[entry["task_id"]] = {
            k: entry[k] for k in ("task_id", "task_name", "status", "started")
        }
    if step is None and not steps:
        return None
    label = result.labels.get(WORKFLOW_LABEL) if result else None
    if label is None and letter is not None and letter[1] is not None:
        label = letter[1].labels.get(WORKFLOW_LABEL)
    next_ids = [i for i in following(label) if len(i) <= NAME_LIMIT] if label is not None else []
    next_ids = next_ids[:NEXT_SHOWN]
    statuses = await asyncio.gather(*(_status(broker, i) for i in [workflow_id, *next_ids]))
    whole = await _result(broker, workflow_id) if step else result
    return {
        "id": workflow_id,
        "kind": whole.task_name[:NAME_LIMIT] if whole else None,
        "status": statuses[0],
        "path": step[1] if step else None,
        "next": [{"task_id": i, "status": s} for i, s in zip(next_ids, statuses[1:], strict=True)],
        "steps": sorted(steps.values(), key=lambda s: _path_key(s["task_id"])),
    }


def _path_key(task_id: str) -> list[int]:
    step = step_of(task_id)
    return [int(part) for part in step[1].split(".")[1:]] if step else []


async def worker_detail(inspector: Inspector, name: str) -> dict[str, Any] | None:
    """A worker's heartbeat (when it is live) and the runs it still lists, or None."""
    live = next((w for w in await inspector.workers() if w.name == name), None)
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for recent, failed in await inspector.worker_lists():
        runs += [entry for entry in recent if entry["worker"] == name]
        failures += [entry for entry in failed if entry["worker"] == name]
    if live is None and not runs and not failures:
        return None
    return {
        "name": name[:NAME_LIMIT],
        "live": live is not None,
        "heartbeat": _shown_worker(live) if live else None,
        "recent": _newest(runs),
        "failed": _newest(failures),
    }


def _shown_worker(worker: WorkerInfo) -> dict[str, Any]:
    shown = asdict(worker)
    shown.update(
        name=worker.name[:NAME_LIMIT],
        host=worker.host[:NAME_LIMIT],
        queues=[queue[:NAME_LIMIT] for queue in worker.queues[:LIST_SHOWN]],
        running=[task_id[:NAME_LIMIT] for task_id in worker.running[:LIST_SHOWN]],
        counters={key[:NAME_LIMIT]: value for key, value in list(worker.counters.items())[:20]},
    )
    return shown


def _newest(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries.sort(key=lambda e: e.get("finished") or e.get("started") or 0.0, reverse=True)
    return entries[:RECENT_SHOWN]
