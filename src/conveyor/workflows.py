"""`chain`, `group` and `chord`: workflows whose state lives in the broker, not in a process.

A workflow is a tree of signatures, chains and groups. `kiq()` sends its first steps; every
step's message carries, in its `workflow` label, the rest of the work as a stack of frames
(the chain steps still to run, the groups it belongs to). When a step ends, the worker that
ran it sends what comes next (or stores the workflow's result) *before* it settles the step,
so a worker killed at any point only delays the workflow: the step is delivered again, runs
again, and goes on from where the first run stopped.

The `workflow` label is a `Flow` (msgspec Structs, so a malformed label fails to convert
instead of half-running): the workflow's id and kind, and the frames of what follows the step.
A node is a `CallNode` (a signature), a `ChainNode` or a `GroupNode`; a frame is the rest of a
chain (`ChainRest`) or the step's membership of a group (`Member`).

Ids: the workflow's id W is the id of its handle's result; the step at path `w.2.0` (third
step of the root chain, first member of that group) runs as task `W-w.2.0`. A group counts its
finished members with `State.join_group` (a member counted twice counts once) and keeps each
member's value under the result id `W-<group path>-<index>`; the member that completes the set
sends what follows the group, with the list of values in order.

Each next step is sent once, through `State.claim_send` keyed `step:<step id>` (kept for the
result store's default TTL, or a day): the claim is marked sent once the broker has the
message; another delivery that finds it skips the step when it is marked sent; while it is not,
the holder may still be sending, so the delivery is put back and tried again; a claim older
than the transport's lease whose holder never marked it (the holder died, and its step came
back) is taken over by one delivery, which sends it. A send that fails gives the claim back.

A step that fails for good stores the workflow's result as that failure; nothing after it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from conveyor.errors import ConfigurationError, WorkflowError
from conveyor.message import TaskMessage
from conveyor.options import TaskOptions
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
    "following",
    "group",
    "step_of",
]

#: The label that carries a step's place in its workflow.
WORKFLOW_LABEL = "workflow"

log = logging.getLogger(__name__)

_DAY = 24 * 3600.0
#: The path of a workflow's root node; a step at path P of workflow W runs as task `W-P`.
_ROOT = "w"
_PATH = re.compile(r"w(\.\d+)*")


class CallNode(msgspec.Struct, tag="call", kw_only=True):
    """A signature in a workflow: the task, its arguments and labels; `immutable` for `.si()`."""

    task: str
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    labels: dict[str, Any] = msgspec.field(default_factory=dict)
    immutable: bool = False


class ChainNode(msgspec.Struct, tag="chain"):
    """Steps run one after another."""

    steps: list[Node]


class GroupNode(msgspec.Struct, tag="group"):
    """Members run in parallel."""

    members: list[Node]


Node = CallNode | ChainNode | GroupNode


class ChainRest(msgspec.Struct, tag="rest"):
    """The steps of a chain still to run, the chain's path and the index of the first of them."""

    steps: list[Node]
    path: str
    offset: int


class Member(msgspec.Struct, tag="member"):
    """A step's place in a group: the group's path, its index and the group's size."""

    group: str
    index: int
    size: int


Frame = ChainRest | Member


class Flow(msgspec.Struct):
    """The `workflow` label of a step: the workflow's id and kind, what follows the step, and
    the errback to send if the workflow fails (`on_error`)."""

    id: str
    kind: str
    frames: list[Frame] = msgspec.field(default_factory=list)
    errback: CallNode | None = None


class _Nothing:
    """The input of a first step: there is no previous result to pass."""


_NOTHING: Any = _Nothing()


class Workflow:
    """What `chain`, `group` and `chord` return: `kiq()` sends it and returns its handle;
    `a | b` chains it with what follows."""

    kind = "workflow"
    errback: Signature[Any] | None = None

    def __or__(self, other: Signature[Any] | Workflow) -> Chain:
        return Chain(self, other)

    def __ror__(self, other: Signature[Any]) -> Chain:
        return Chain(other, self)

    def on_error(self, errback: Signature[Any]) -> Workflow:
        """Send `errback` when the workflow fails (Celery's `link_error`), with the id of the
        failed task as its first argument: `await broker.get_handle(id).wait_result()` reads
        its error (stored as the errback is sent)."""
        self.errback = _checked(errback)  # type: ignore[assignment]  # a signature, checked
        return self

    def node(self) -> Node:
        """The workflow as a tree of nodes (what travels in the messages' labels)."""
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
        errback = None if self.errback is None else _node(self.errback)
        flow = Flow(workflow_id, self.kind, errback=cast(CallNode | None, errback))
        messages = await _start(broker, flow, self.node(), _ROOT, _NOTHING, [])
        if messages:
            await broker.state.mark(workflow_id, "running", broker.result_backend.default_ttl)
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
        """A `ChainNode` of the steps."""
        return ChainNode([_node(step) for step in self.steps])

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
        """A `GroupNode` of the members."""
        return GroupNode([_node(member) for member in self.members])

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
        return ChainNode([self.header.node(), _node(self.body)])

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
    TaskOptions.parse(part.labels, part.task_name)  # a worker would refuse the step otherwise
    return CallNode(
        task=part.task_name,
        args=list(part.args),
        kwargs=dict(part.kwargs),
        labels=dict(part.labels),
        immutable=part.immutable,
    )


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
        WorkflowError: the label is malformed, or a group member's value is gone from the
            result store.
        SerializationError: (a TypeError) the next step's arguments cannot be encoded.
        BrokerError: the transport or the state or result store failed.
    """
    label = message.labels.get(WORKFLOW_LABEL)
    if label is None:
        return 0.0
    try:
        flow = msgspec.convert(label, Flow)
    except msgspec.ValidationError as exc:
        raise WorkflowError(f"malformed workflow label: {exc}") from None
    if result.status is not TaskStatus.SUCCEEDED:
        await _end(broker, flow, _failure(flow, result))
        if flow.errback is None:
            return 0.0
        errback = CallNode(
            task=flow.errback.task,
            args=[result.task_id, *flow.errback.args],
            kwargs=flow.errback.kwargs,
            labels=flow.errback.labels,
        )
        return await _send_once(broker, [_message(broker, flow, errback, "errback", _NOTHING, [])])
    messages = await _continue(broker, flow, result.return_value, flow.frames)
    return await _send_once(broker, messages)


async def _start(
    broker: Broker, flow: Flow, node: Node, path: str, value: Any, frames: list[Frame]
) -> list[TaskMessage]:
    """The messages that start `node` (at `path`) with `value`, then go on with `frames`."""
    if isinstance(node, CallNode):
        return [_message(broker, flow, node, path, value, frames)]
    if isinstance(node, ChainNode):
        if not node.steps:
            return await _continue(broker, flow, value, frames)
        return await _continue(broker, flow, value, [ChainRest(node.steps, path, 0), *frames])
    if not node.members:
        return await _continue(broker, flow, [], frames)
    messages = []
    for i, member in enumerate(node.members):
        joined = [Member(path, i, len(node.members)), *frames]
        messages += await _start(broker, flow, member, f"{path}.{i}", value, joined)
    return messages


async def _continue(
    broker: Broker, flow: Flow, value: Any, frames: list[Frame]
) -> list[TaskMessage]:
    """What follows a finished part with result `value`: next messages, or the final result."""
    frames = list(frames)
    while frames:
        frame = frames.pop(0)
        if isinstance(frame, ChainRest):
            rest = frame.steps[1:]
            after: list[Frame] = [ChainRest(rest, frame.path, frame.offset + 1)] if rest else []
            path = f"{frame.path}.{frame.offset}"
            return await _start(broker, flow, frame.steps[0], path, value, after + frames)
        joined = await _join(broker, flow, frame, value)
        if joined is _NOTHING:
            return []  # other members still run; the last one goes on
        value = joined
    await _end(broker, flow, _success(flow, value))
    return []


async def _join(broker: Broker, flow: Flow, member: Member, value: Any) -> Any:
    """Record a group's member; the list of values once every member is in."""
    results, ttl = broker.result_backend, broker.result_backend.default_ttl
    base = f"{flow.id}-{member.group}"
    await results.set_result(f"{base}-{member.index}", broker.encode_value(value), ttl)
    if await broker.state.join_group(base, member.index, ttl) < member.size:
        return _NOTHING
    stored = await asyncio.gather(*(results.get_result(f"{base}-{i}") for i in range(member.size)))
    if any(data is None for data in stored):  # expired, or evicted from a capped store
        raise WorkflowError(f"workflow {flow.id}: a group member's value is gone")
    return [broker.decode_value(cast(bytes, data)) for data in stored]


def _message(
    broker: Broker, flow: Flow, node: CallNode, path: str, value: Any, frames: list[Frame]
) -> TaskMessage:
    args = list(node.args)
    if value is not _NOTHING and not node.immutable:
        args.insert(0, value)
    task = broker.find_task(node.task)
    errback = None if path == "errback" else flow.errback  # an errback has none of its own
    rest = msgspec.to_builtins(Flow(flow.id, flow.kind, frames, errback))
    labels = {**node.labels, WORKFLOW_LABEL: rest}
    task_labels = task.labels if task else None
    return broker.build_message(
        node.task, args, node.kwargs, task_labels, labels, _step_id(flow.id, path)
    )


def _step_id(workflow_id: str, path: str) -> str:
    return f"{workflow_id}-{path}"


def step_of(task_id: str) -> tuple[str, str] | None:
    """(workflow id, path) when `task_id` is the id of a workflow's step, else None."""
    workflow_id, _, path = task_id.rpartition("-")
    return (workflow_id, path) if workflow_id and _PATH.fullmatch(path) else None


def following(label: Any) -> list[str]:
    """The ids of the steps a workflow step's success sends (for a group's member: what the
    group's last member sends), from its `workflow` label; [] when the label is malformed or
    nothing follows but the workflow's end."""
    try:
        flow = msgspec.convert(label, Flow)
    except msgspec.ValidationError:
        return []
    rest = next((f for f in flow.frames if isinstance(f, ChainRest) and f.steps), None)
    if rest is None:
        return []
    return _first_steps(flow.id, rest.steps[0], f"{rest.path}.{rest.offset}")


def _first_steps(workflow_id: str, node: Node, path: str) -> list[str]:
    if isinstance(node, CallNode):
        return [_step_id(workflow_id, path)]
    if isinstance(node, ChainNode):
        return _first_steps(workflow_id, node.steps[0], f"{path}.0") if node.steps else []
    ids = (_first_steps(workflow_id, m, f"{path}.{i}") for i, m in enumerate(node.members))
    return [task_id for found in ids for task_id in found]


async def _send_once(broker: Broker, messages: list[TaskMessage]) -> float:
    """Send the messages no other delivery sent or is sending; the seconds to wait for those."""
    if not messages:
        return 0.0
    state, ttl = broker.state, broker.result_backend.default_ttl or _DAY
    lease = broker.transport.lease_seconds

    async def claim(task_id: str) -> float | None:
        async def was_sent() -> bool:
            return await broker.task_status(task_id) is not None

        return await state.claim_send(f"step:{task_id}", ttl, lease, was_sent)

    waits = await asyncio.gather(*(claim(m.task_id) for m in messages))
    fresh = [m for m, wait in zip(messages, waits, strict=True) if wait is None]
    if fresh:
        try:
            await broker.send(fresh)
        except BaseException:
            for m in fresh:  # nothing sent: the next delivery of the step tries again
                with contextlib.suppress(Exception):
                    await state.give_back(f"step:{m.task_id}")
            raise
        marks = (state.mark_sent(f"step:{m.task_id}", ttl) for m in fresh)
        for failed in await asyncio.gather(*marks, return_exceptions=True):
            if isinstance(failed, Exception):  # sent all the same: a takeover checks its state
                log.warning("workflow: could not mark a step as sent: %s", failed)
    return max((wait for wait in waits if wait is not None), default=0.0)


def _success(flow: Flow, value: Any) -> TaskResult[Any]:
    now = utcnow()
    return TaskResult(
        task_id=flow.id,
        task_name=flow.kind,
        status=TaskStatus.SUCCEEDED,
        return_value=value,
        started_at=now,
        finished_at=now,
    )


def _failure(flow: Flow, step: TaskResult[Any]) -> TaskResult[Any]:
    return TaskResult(
        task_id=flow.id,
        task_name=flow.kind,
        status=step.status,
        error_type=step.error_type,
        error_module=step.error_module,
        error_message=step.error_message,
        error_traceback=step.error_traceback,
        labels={"failed_step": step.task_id, "failed_task": step.task_name},
        attempts=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
        worker=step.worker,
    )


async def _end(broker: Broker, flow: Flow, result: TaskResult[Any]) -> None:
    """Store the workflow's result unless it has one (the first end wins)."""
    if await broker.result_backend.get_result(flow.id) is None:
        await broker.store_result(result, broker.result_backend.default_ttl)
