"""The wire message and its codec: what a producer sends and a worker runs.

A message is a msgspec Struct encoded by the broker's serializer (JSON by default) and signed
when a secret key is set. The format is documented in `docs/message-format.md`; fields may be
added, never renamed. `Codec` bounds what it accepts: a body larger than `max_bytes` or values
nested deeper than `max_depth` are refused with `SerializationError` on both sides, so a
producer cannot send what a worker would refuse, and nothing read from a store can exhaust the
decoder (never `RecursionError`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from conveyor.errors import SerializationError
from conveyor.serializers import Serializer, Signer

__all__ = ["MAX_DEPTH", "MAX_MESSAGE_BYTES", "Codec", "TaskMessage", "TaskiqMessage", "nesting"]

#: Largest encoded message accepted, by default (bytes).
MAX_MESSAGE_BYTES: Final = 64 * 2**20
#: Deepest nesting of lists and dicts accepted in arguments and labels, by default.
MAX_DEPTH: Final = 128


class TaskMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One task invocation on the wire.

    Attributes:
        task_id: unique id of this invocation; the key of its result.
        task_name: the registered name the worker looks the function up by.
        labels: the task's options and free metadata (queue, priority, retries, ...).
        args: positional arguments, JSON-compatible after encoding.
        kwargs: keyword arguments.
        attempt: 1 for the first run, incremented by each retry.
        due: unix time before which it must not run (a delay, an ETA, a retry's wait), or
            None; under the signature, so a replayed copy cannot run early.
    """

    task_id: str
    task_name: str
    labels: dict[str, Any] = msgspec.field(default_factory=dict)
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    attempt: int = 1
    due: float | None = None


#: The seed's name for the message class (`from taskiq import TaskiqMessage`).
TaskiqMessage = TaskMessage


class Codec:
    """Encodes and signs messages, and verifies and decodes them, within size and depth bounds.

    Args:
        serializer: the broker's serializer.
        signer: signs bodies when a secret key is set.
        max_bytes: largest encoded message.
        max_depth: deepest nesting of lists and dicts in arguments and labels.
    """

    def __init__(
        self,
        serializer: Serializer,
        signer: Signer,
        *,
        max_bytes: int = MAX_MESSAGE_BYTES,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.serializer = serializer
        self.signer = signer
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._json = serializer.name == "json"
        # A body this short is within both bounds in any format (a level of nesting takes at
        # least a byte), so it is not looked at again.
        self._short = min(max_depth, max_bytes)

    def encode(self, message: TaskMessage) -> bytes:
        """The signed body of `message`.

        Raises:
            SerializationError: (a TypeError) a value cannot be encoded, is nested too deeply,
                or the message is too large.
        """
        body = self.serializer.encode(message)
        if len(body) > self._short:
            self._check(body, message)
        return self.signer.sign(body)

    def decode(self, data: bytes) -> TaskMessage:
        """The message of a body, its signature checked.

        Raises:
            SerializationError: malformed, too large or too deep; `SignatureError` for a
                missing or wrong signature.
        """
        if len(data) > self.max_bytes + 64:  # the signature's frame is at most 36 bytes
            raise SerializationError(f"message of {len(data)} bytes is over {self.max_bytes}")
        body = self.signer.verify(data)
        message = self.serializer.decode(body, TaskMessage)
        if len(body) > self._short:
            self._check(body, message)
        return message

    def _check(self, body: bytes, message: TaskMessage) -> None:
        if len(body) > self.max_bytes:
            raise SerializationError(
                f"{message.task_name}: message of {len(body)} bytes is over {self.max_bytes}"
            )
        if self._json and body.count(b"[") + body.count(b"{") <= self.max_depth:
            return  # no more brackets than that: it cannot nest deeper
        for part in (message.args, message.kwargs, message.labels):
            if nesting(part, self.max_depth) > self.max_depth:
                raise SerializationError(
                    f"{message.task_name}: values nested more than {self.max_depth} deep"
                )


def nesting(value: Any, limit: int) -> int:
    """How deep lists, tuples and dicts nest in `value` (1 for a flat one, 0 for a scalar),
    counting no further than `limit + 1`; iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
