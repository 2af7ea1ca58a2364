"""`chain`, `group` and `chord`: workflows whose state lives in the broker, not in a process.

A workflow is a tree of signatures, chains and groups. `kiq()` sends its first steps; every
step's message carries, in its `workflow` label, the rest of the work as a stack of frames
(the chain steps still to run, the groups it belongs to). When a step ends, the worker that
ran it sends what comes next (or stores the workflow's result) *before* it settles the step,
so a worker killed at any point only delays the workflow: the step is delivered again, runs
again, and goes on from where the first run stopped.

Ids: the workflow's id W is the id of its handle's result; the step at path `w.2.0` (third
step of the root chain, first member of that group) runs as task `W-w.2.0`. A group counts its
finished members with the transport's atomic `set_add` (a member counted twice counts once) and
keeps each member's value under the result id `W-<group path>-<index>`; the member that
completes the set sends what follows the group, with the list of values in order.

Each next step is sent once: its sender first claims `workflow:sent:<step id>` with the
transport's atomic `set_nx` (kept for the result store's default TTL, or a day), and marks the
claim "sent" once the broker has the message. Another delivery that finds the claim skips the
step when it is marked sent; while it is not, the holder may still be sending, so the delivery
is put back and tried again; a claim older than the transport's lease whose holder never marked
it (the holder died, and its step came back) is taken over by one delivery, which sends it. A
send that fails gives the claim back.

A step that fails for good stores the workflow's result as that failure; nothing after it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from conveyor.errors import ConfigurationError, WorkflowError
from conveyor.labels import validate_labels
from conveyor.message import TaskMessage
from conveyor.result import TaskHandle, TaskResult, TaskStatus, utcnow
from conveyor.task import Signature

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.portal import SyncTaskHandle

__all__ = [
    "WORKFLOW_LABEL",
    "Chain",
    "Chord",
    "Group",
    "Workflow",
    "advance",
    "chain",
    "chord",
    "group",
]

#: The label that carries a step's place in its workflow.
WORKFLOW_LABEL = "workflow"

log = logging.getLogger(__name__)

_SENT = b"sent"  # the value of a next step's claim once the broker has it
_DAY = 24 * 3600.0
_RETRY = 1.0  # seconds before a step whose successor another delivery is sending tries again

Node = dict[str, Any]
Frame = dict[str, Any]


class _Nothing:
    """The input of a first step: there is no previous result to pass."""


_NOTHING: Any = _Nothing()


class Workflow:
    """What `chain`, `group` and `chord` return: `kiq()` sends it and returns its handle."""

    kind = "workflow"

    def node(self) -> Node:
        """The workflow as plain data (what travels in the messages' labels)."""
        raise NotImplementedError

    def signatures(self) -> Iterable[Signature[Any]]:
        """Every signature in the workflow, depth first."""
        raise NotImplementedError

    async def kiq(self, broker: Broker | None = None) -> TaskHandle[Any]:
        """Send the workflow's first steps; the handle's result is the workflow's result.

        Args:
            broker: where to send; by default the broker of the first task in it.

        Raises:
            ConfigurationError: no broker given and no signature made from a task.
        """
        broker = broker or self._broker()
        workflow_id = broker.task_id_generator()
        flow = {"id": workflow_id, "kind": self.kind}
        messages = await _start(broker, flow, self.node(), "w", _NOTHING, [])
        if messages:
            await broker.result_backend.set_state(
                workflow_id, "running", broker.result_backend.default_ttl
            )
            await broker.send(messages)
        return TaskHandle(broker, workflow_id, self.kind)

    def kiq_sync(self, broker: Broker | None = None) -> SyncTaskHandle[Any]:
        """`kiq` from synchronous code; returns a blocking handle."""
        from conveyor.portal import SyncTaskHandle, portal_for

        broker = broker or self._broker()
        return SyncTaskHandle(portal_for(broker).call(self.kiq(broker)))

    def _broker(self) -> Broker:
        for sig in self.signatures():
            if sig.task is not None:
                return sig.task.broker
        raise ConfigurationError(f"{self.kind}: no task in it to take the broker from: kiq(broker)")


class Chain(Workflow):
    """Steps run one after another; each step's result is the next one's first argument."""

    kind = "chain"

    def __init__(self, *steps: Signature[Any] | Workflow) -> None:
        self.steps = [_checked(step) for step in steps]

    def node(self) -> Node:
        """{"c": [steps]}."""
        return {"c": [_node(step) for step in self.steps]}

    def signatures(self) -> Iterable[Signature[Any]]:
        """Every signature of the steps, in order."""
        return _signatures(self.steps)


class Group(Workflow):
    """Members run in parallel; the result is the list of their results, in order."""

    kind = "group"

    def __init__(self, *members: Signature[Any] | Workflow | Iterable[Signature[Any] | Workflow]):
        if len(members) == 1 and not isinstance(members[0], Signature | Workflow):
            members = tuple(members[0])
        self.members = [_checked(member) for member in members]

    def node(self) -> Node:
        """{"g": [members]}."""
        return {"g": [_node(member) for member in self.members]}

    def signatures(self) -> Iterable[Signature[Any]]:
        """Every signature of the members, in order."""
        return _signatures(self.members)


class Chord(Workflow):
    """A group, then `body` called with the list of the group's results."""

    kind = "chord"

    def __init__(
        self, header: Group | Iterable[Signature[Any] | Workflow], body: Signature[Any] | Workflow
    ) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        self.body = _checked(body)

    def node(self) -> Node:
        """A chain of the group and the body."""
        return {"c": [self.header.node(), _node(self.body)]}

    def signatures(self) -> Iterable[Signature[Any]]:
        """The header's signatures, then the body's."""
        return _signatures([self.header, self.body])


def chain(*steps: Signature[Any] | Workflow) -> Chain:
    """`chain(add.s(1, 2), mul.s(10))`: mul(3, 10). Steps may be groups and chains."""
    return Chain(*steps)


def group(*members: Signature[Any] | Workflow | Iterable[Signature[Any] | Workflow]) -> Group:
    """`group(add.s(i, i) for i in range(10))` or `group(a.s(), b.s())`: results in order."""
    return Group(*members)


def chord(
    header: Group | Iterable[Signature[Any] | Workflow], body: Signature[Any] | Workflow
) -> Chord:
    """`chord(group(fetch.s(u) for u in urls), merge.s())`: merge(list of fetched)."""
    return Chord(header, body)


def _checked(part: Any) -> Signature[Any] | Workflow:
    if not isinstance(part, Signature | Workflow):
        raise TypeError(f"a workflow takes signatures (task.s(...)) and workflows, not {part!r}")
    return part


def _node(part: Signature[Any] | Workflow) -> Node:
    if isinstance(part, Workflow):
        return part.node()
    validate_labels(part.labels, part.task_name)  # a worker would refuse the step otherwise
    return {
        "s": part.task_name,
        "a": list(part.args),
        "k": dict(part.kwargs),
        "l": dict(part.labels),
        "i": part.immutable,
    }


def _signatures(parts: Iterable[Signature[Any] | Workflow]) -> Iterable[Signature[Any]]:
    for part in parts:
        if isinstance(part, Workflow):
            yield from part.signatures()
        else:
            yield part


# -- the engine: run by the worker that finished a step ---------------------------------------


async def advance(broker: Broker, message: TaskMessage, result: TaskResult[Any]) -> float:
    """After a workflow step ends and before it is settled: send what follows, or end it.

    Safe to repeat (a redelivered step): what follows is sent once, a group member is counted
    once, and the workflow's first final result stays.

    Returns:
        0.0 when done; else the seconds after which to run this again (put the step back):
        another delivery claimed what follows and has not yet sent it.

    Raises:
        WorkflowError: a group member's value is gone from the result store.
        SerializationError: (a TypeError) the next step's arguments cannot be encoded.
        BrokerError: the transport or the result store failed.
    """
    label = message.labels.get(WORKFLOW_LABEL)
    if not isinstance(label, dict):
        return 0.0
    flow = {"id": str(label["id"]), "kind": str(label.get("kind", "workflow"))}
    if result.status is not TaskStatus.SUCCEEDED:
        await _end(broker, flow, _failure(flow, result))
        return 0.0
    frames = cast(list[Frame], label.get("k") or [])
    messages = await _continue(broker, flow, result.return_value, frames)
    return await _send_once(broker, messages)


async def _start(
    broker: Broker, flow: dict[str, str], node: Node, path: str, value: Any, frames: list[Frame]
) -> list[TaskMessage]:
    """The messages that start `node` (at `path`) with `value`, then go on with `frames`."""
    if "s" in node:
        return [_message(broker, flow, node, path, value, frames)]
    if "c" in node:
        steps = node["c"]
        if not steps:
            return await _continue(broker, flow, value, frames)
        return await _continue(broker, flow, value, [{"c": steps, "p": path, "o": 0}, *frames])
    members = node["g"]
    if not members:
        return await _continue(broker, flow, [], frames)
    messages = []
    for i, member in enumerate(members):
        joined = [{"g": path, "i": i, "n": len(members)}, *frames]
        messages += await _start(broker, flow, member, f"{path}.{i}", value, joined)
    return messages


async def _continue(
    broker: Broker, flow: dict[str, str], value: Any, frames: list[Frame]
) -> list[TaskMessage]:
    """What follows a finished part with result `value`: next messages, or the final result."""
    frames = list(frames)
    while frames:
        frame = frames.pop(0)
        if "c" in frame:
            steps, base, offset = frame["c"], frame["p"], frame["o"]
            rest = [{"c": steps[1:], "p": base, "o": offset + 1}] if len(steps) > 1 else []
            return await _start(broker, flow, steps[0], f"{base}.{offset}", value, rest + frames)
        joined = await _join(broker, flow, frame, value)
        if joined is _NOTHING:
            return []  # other members still run; the last one goes on
        value = joined
    await _end(broker, flow, _success(flow, value))
    return []


async def _join(broker: Broker, flow: dict[str, str], frame: Frame, value: Any) -> Any:
    """Record member `i` of a group; the list of values once every member is in."""
    results, ttl = broker.result_backend, broker.result_backend.default_ttl
    base = f"{flow['id']}-{frame['g']}"
    await results.set_result(f"{base}-{frame['i']}", broker.encode_value(value), ttl)
    size = int(frame["n"])
    if await broker.transport.set_add(f"workflow:{base}", str(frame["i"]), ttl) < size:
        return _NOTHING
    stored = await asyncio.gather(*(results.get_result(f"{base}-{i}") for i in range(size)))
    if any(data is None for data in stored):  # expired, or evicted from a capped store
        raise WorkflowError(f"workflow {flow['id']}: a group member's value is gone")
    return [broker.decode_value(cast(bytes, data)) for data in stored]


def _message(
    broker: Broker, flow: dict[str, str], node: Node, path: str, value: Any, frames: list[Frame]
) -> TaskMessage:
    args = list(node["a"])
    if value is not _NOTHING and not node["i"]:
        args.insert(0, value)
    task = broker.find_task(node["s"])
    labels = {**node["l"], WORKFLOW_LABEL: {**flow, "k": frames}}
    return broker.build_message(
        node["s"], args, node["k"], task.labels if task else None, labels, f"{flow['id']}-{path}"
    )


async def _send_once(broker: Broker, messages: list[TaskMessage]) -> float:
    """Send the messages no other delivery sent or is sending; the seconds to wait for those."""
    if not messages:
        return 0.0
    transport, ttl = broker.transport, broker.result_backend.default_ttl or _DAY
    waits = await asyncio.gather(*(_claim(broker, m.task_id, ttl) for m in messages))
    fresh = [m for m, wait in zip(messages, waits, strict=True) if wait is None]
    if fresh:
        try:
            await broker.send(fresh)
        except BaseException:
            for m in fresh:  # nothing sent: the next delivery of the step tries again
                with contextlib.suppress(Exception):
                    await transport.kv_delete(_claim_key(m.task_id))
            raise
        marks = (transport.kv_set(_claim_key(m.task_id), _SENT, ttl) for m in fresh)
        for failed in await asyncio.gather(*marks, return_exceptions=True):
            if isinstance(failed, Exception):  # sent all the same: a takeover checks its state
                log.warning("workflow: could not mark a step as sent: %s", failed)
    return max((wait for wait in waits if wait is not None), default=0.0)


def _claim_key(task_id: str) -> str:
    return f"workflow:sent:{task_id}"


async def _claim(broker: Broker, task_id: str, ttl: float) -> float | None:
    """None when this delivery is to send `task_id`; else 0.0 when it was sent, or the seconds
    to wait for the delivery that claimed it."""
    transport, key, now = broker.transport, _claim_key(task_id), time.time()
    if await transport.set_nx(key, repr(now).encode(), ttl):
        return None
    held = await transport.kv_get(key)
    if held == _SENT:
        return 0.0
    if held is None:  # its holder's send just failed and gave it back
        return _RETRY
    age, lease = now - float(held), transport.lease_seconds
    if age < lease:
        return max(lease - age, _RETRY)  # its holder may still be sending
    # Older than a lease and never marked sent: its holder died (its step came back to us).
    if not await transport.set_nx(f"{key}:{held.decode()}", b"1", ttl):
        return lease  # another delivery takes it over
    if await broker.task_status(task_id) is not None:  # it was sent; only the mark is missing
        await transport.kv_set(key, _SENT, ttl)
        return 0.0
    await transport.kv_set(key, repr(now).encode(), ttl)
    return None


def _success(flow: dict[str, str], value: Any) -> TaskResult[Any]:
    now = utcnow()
    return TaskResult(
        task_id=flow["id"],
        task_name=flow["kind"],
        status=TaskStatus.SUCCEEDED,
        return_value=value,
        started_at=now,
        finished_at=now,
    )


def _failure(flow: dict[str, str], step: TaskResult[Any]) -> TaskResult[Any]:
    return TaskResult(
        task_id=flow["id"],
        task_name=flow["kind"],
        status=step.status,
        error_type=step.error_type,
        error_message=step.error_message,
        error_traceback=step.error_traceback,
        labels={"failed_step": step.task_id, "failed_task": step.task_name},
        attempts=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
        worker=step.worker,
    )


async def _end(broker: Broker, flow: dict[str, str], result: TaskResult[Any]) -> None:
    """Store the workflow's result unless it has one (the first end wins)."""
    if await broker.result_backend.get_result(flow["id"]) is None:
        await broker.store_result(result, broker.result_backend.default_ttl)
