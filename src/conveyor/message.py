"""The wire message: what a producer sends and a worker runs.

A message is a msgspec Struct encoded once by the broker's serializer (JSON by default). The
format is documented in `docs/message-format.md`; fields may be added, never renamed.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["TaskMessage", "TaskiqMessage"]


class TaskMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One task invocation on the wire.

    Attributes:
        task_id: unique id of this invocation; the key of its result.
        task_name: the registered name the worker looks the function up by.
        labels: the task's options and free metadata (queue, priority, retries, ...).
        args: positional arguments, JSON-compatible after encoding.
        kwargs: keyword arguments.
        attempt: 1 for the first run, incremented by each retry.
    """

    task_id: str
    task_name: str
    labels: dict[str, Any] = msgspec.field(default_factory=dict)
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    attempt: int = 1


#: The seed's name for the message class (`from taskiq import TaskiqMessage`).
TaskiqMessage = TaskMessage
