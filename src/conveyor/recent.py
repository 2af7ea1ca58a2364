"""The recent-task records workers publish and the dashboard shows, each cut to a bounded size.

Invariants: a record shows a call's arguments and labels as values only when their JSON is at
most `ARGS_LIMIT` / `LABELS_LIMIT` characters and nests at most `SHOWN_DEPTH` levels; otherwise
`args_text` / `labels_text` hold the start of their text and the values are empty. Names,
errors and tracebacks are cut too. The same cut applies whichever way a task was sent (`kiq`,
the web API, a schedule) and whoever wrote the record, so a snapshot of the dashboard holds a
few KB per task and always encodes, however large or deep the call was.
"""

from __future__ import annotations

import json
import reprlib
from typing import Any, Final

import msgspec

from conveyor.message import nesting

__all__ = [
    "ARGS_LIMIT",
    "ERROR_LIMIT",
    "LABELS_LIMIT",
    "NAME_LIMIT",
    "RECENT_SIZE",
    "SHOWN_DEPTH",
    "SIGNED_RECENT",
    "TRACEBACK_LIMIT",
    "RecentTask",
    "shown",
    "shown_call",
    "shown_value",
]

#: Tasks each worker lists as recent, and as failed.
RECENT_SIZE: Final = 30
#: Characters of a call's arguments (as JSON) and labels shown as values.
ARGS_LIMIT: Final = 2000
LABELS_LIMIT: Final = 2000
#: Characters of a task, queue or worker name, and of an error line.
NAME_LIMIT: Final = 200
ERROR_LIMIT: Final = 2000
#: Characters of a traceback (its end is kept).
TRACEBACK_LIMIT: Final = 8000
#: Deepest nesting of lists and objects shown as values.
SHOWN_DEPTH: Final = 32
#: What the recent-task lists are signed as (`Signer.derive`) when a secret key is set: the
#: dashboard's Retry sends what they hold, so one written without the key is never read.
SIGNED_RECENT: Final = "recent tasks"

_REPR = reprlib.Repr()  # bounded in depth and length: safe for any value
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 6, 200, 200


class RecentTask(msgspec.Struct, kw_only=True):
    """One task of a worker's recent or failed list, as the dashboard shows it (long arguments
    and labels cut: `args_text` / `labels_text` then hold the start, else they are None)."""

    task_id: str
    task_name: str
    status: str
    queue: str = ""
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    args_text: str | None = None
    labels: dict[str, Any] = msgspec.field(default_factory=dict)
    labels_text: str | None = None
    attempt: int = 1
    worker: str = ""
    started: float = 0.0
    finished: float | None = None
    duration: float | None = None
    error: str | None = None
    traceback: str | None = None


def shown_call(args: Any, kwargs: Any, labels: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record that show a call: `args`, `kwargs` and `labels` as values when
    they are short and shallow, else empty with `args_text` / `labels_text`."""
    shown: dict[str, Any] = {"args": args, "kwargs": kwargs, "labels": labels}
    text, whole = _text([args, kwargs], ARGS_LIMIT)
    if not whole:
        shown.update(args=[], kwargs={}, args_text=text)
    text, whole = _text(labels, LABELS_LIMIT)
    if not whole:
        shown.update(labels={}, labels_text=text)
    return shown


def shown_value(value: Any, limit: int = ARGS_LIMIT) -> dict[str, Any]:
    """A value read from a store as the page shows it: `{"value": value}` when its JSON is at
    most `limit` characters and `SHOWN_DEPTH` levels, else `{"text": the start of its text}`."""
    text, whole = _text(value, limit)
    return {"value": value} if whole else {"text": text}


def shown(record: RecentTask) -> dict[str, Any]:
    """A record read back from the store as JSON for the page: cut as `shown_call` cuts, with
    its names, error and traceback cut too (a worker of another version may not have)."""
    data = msgspec.structs.asdict(record)
    if record.args_text is None:
        data.update(shown_call(record.args, record.kwargs, record.labels))
    for name in ("task_id", "task_name", "status", "queue", "worker"):
        data[name] = data[name][:NAME_LIMIT]
    for name, limit in (("args_text", ARGS_LIMIT), ("labels_text", LABELS_LIMIT)):
        if data.get(name) is not None:
            data[name] = data[name][: limit + 3]
    if record.error is not None:
        data["error"] = record.error[:ERROR_LIMIT]
    if record.traceback is not None:
        data["traceback"] = record.traceback[-TRACEBACK_LIMIT:]
    return data


def _text(value: Any, limit: int) -> tuple[str, bool]:
    """`value` as text cut to `limit` (+ "..."), and whether it can be shown as it is."""
    if nesting(value, SHOWN_DEPTH) > SHOWN_DEPTH:
        text, plain = _REPR.repr(value), False
    else:
        try:
            text, plain = json.dumps(value), True
        except (TypeError, ValueError):  # e.g. a pickle-serializer broker's objects
            text, plain = _REPR.repr(value), False
    if len(text) > limit:
        return text[:limit] + "...", False
    return text, plain
