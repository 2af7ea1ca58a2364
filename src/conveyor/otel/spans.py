"""Producer and consumer spans after the OpenTelemetry messaging conventions.

What holds here:

- A send span (`send <queue>`, kind PRODUCER) starts in `pre_send`, writes its context into the
  message's labels (the keys the global propagator writes: `traceparent`, `tracestate`,
  `baggage` by default) and ends in `post_send`. Open send spans are kept per asyncio task,
  weakly: the spans of a send that raised are never ended, so never exported, and go with the
  task that sent them.
- A run span (`process <queue>`, kind CONSUMER) starts in `pre_execute`: a child of the send
  span whose context the message carries, or with `link` a new trace linked to it. It is made
  current for the rest of the run. Every run has an asyncio task of its own (the worker's, or
  the one `InMemoryBroker(await_inplace=True)` makes), so the context attached there belongs to
  the run alone and is never detached: what the task sends is a child of the run span (the next
  steps of a workflow, a chord's callback), what it logs carries its ids. It ends after the
  result is stored (`post_save`), after a failed attempt that is retried (`on_error`), or when
  the run's task ends without either (handed back at shutdown, a workflow step put back, a
  worker error), whichever comes first.
- A run the scheduler sends (`FIRING`) starts a trace of its own, linked to the span current in
  the scheduler if there is one.
- Without an SDK (the API's proxy or no-op provider, `ProviderCheck`) nothing is recorded; a
  trace context that comes in is still passed on (attached in the worker, written into what it
  sends), which costs a set lookup per run when none comes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from conveyor import __version__
from conveyor.errors import SoftTimeLimitExceeded
from conveyor.message import TaskMessage
from conveyor.options import DEFAULT_QUEUE
from conveyor.otel.providers import ProviderCheck
from conveyor.result import TaskResult, TaskStatus
from conveyor.scheduler.loop import FIRING
from conveyor.workflows import WORKFLOW_LABEL

__all__ = ["Tracing"]

#: The value of `messaging.system`.
SYSTEM = "conveyor"
_SCHEMA = "https://opentelemetry.io/schemas/1.27.0"
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


@dataclass(slots=True)
class _Run:
    """The run span of one message, current in the run's task."""

    task_id: str
    span: Span
    status: TaskStatus | None = None  # the outcome put on the span
    ended: bool = False

    def mark(self, result: TaskResult[Any]) -> None:
        """Put a result's outcome on the span: an error status for a failed attempt."""
        if result.status is self.status:
            return
        self.status = result.status
        self.span.set_attribute("conveyor.task.outcome", str(result.status))
        if result.status in (TaskStatus.FAILED, TaskStatus.RETRYING):
            self.span.set_attribute("error.type", result.error_type or "Exception")
            description = f"{result.error_type}: {result.error_message}"
            self.span.set_status(Status(StatusCode.ERROR, description))

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.span.end()

    def task_done(self, _task: asyncio.Task[Any]) -> None:
        """The run's task ended: end the span if no hook did (the message went back)."""
        if not self.ended:
            self.span.add_event("conveyor.task.released")
            self.end()


_RUN: ContextVar[_Run | None] = ContextVar("conveyor_otel_run", default=None)


class Tracing:
    """Starts and ends the spans of one broker's sends and runs.

    Args:
        provider: where spans go; the global provider (looked up until an SDK sets one) if None.
        link: runs start a new trace linked to the send span instead of a child span.
    """

    def __init__(self, provider: TracerProvider | None, link: bool) -> None:
        self.link = link
        self.engine = "unknown"
        self.check = ProviderCheck(provider, trace.get_tracer_provider, _NO_SDK)
        self._tracer: Tracer | None = None
        self._fields = frozenset(propagate.get_global_textmap().fields)
        self._sending: weakref.WeakKeyDictionary[asyncio.Task[Any], dict[str, Span]] = (
            weakref.WeakKeyDictionary()
        )

    def started(self, engine: str) -> None:
        """The broker started: look for an SDK again, and at the propagator's keys."""
        self.engine = engine
        self.check.again()
        self._fields = frozenset(propagate.get_global_textmap().fields)

    def tracer(self) -> Tracer | None:
        """The tracer, or None while no SDK is configured (`ProviderCheck`)."""
        if self._tracer is None:
            provider = self.check.found()
            if provider is None:
                return None
            self._tracer = provider.get_tracer("conveyor", __version__, schema_url=_SCHEMA)
        return self._tracer

    # -- sending ------------------------------------------------------------------------------

    def start_send(self, message: TaskMessage) -> None:
        """Start the send span of `message` and write its context into the labels."""
        tracer = self.tracer()
        if tracer is None:
            if trace.get_current_span().get_span_context().is_valid:
                propagate.inject(message.labels)  # passed on, not recorded
            return
        queue = message.labels.get("queue") or DEFAULT_QUEUE
        attributes = self._attributes(message, queue, "send")
        parent: Context | None = None
        links: Sequence[Link] = ()
        schedule = FIRING.get()
        if schedule is not None:
            attributes["conveyor.schedule.id"] = schedule
            parent, links = Context(), _links(trace.get_current_span())
        span = tracer.start_span(
            f"send {queue}", parent, kind=SpanKind.PRODUCER, attributes=attributes, links=links
        )
        propagate.inject(message.labels, trace.set_span_in_context(span))
        task = asyncio.current_task()
        if task is None:  # not sent from a task: no post_send to wait for
            span.end()
        else:
            self._sending.setdefault(task, {})[message.task_id] = span

    def end_send(self, message: TaskMessage) -> None:
        """End the send span of `message` (it reached the broker)."""
        task = asyncio.current_task() if self._sending else None
        spans = self._sending.get(task) if task is not None else None
        span = spans.pop(message.task_id, None) if spans else None
        if span is not None:
            span.end()

    # -- running ------------------------------------------------------------------------------

    def start_run(self, message: TaskMessage) -> None:
        """Start the run span of `message` and make it current for the rest of the run."""
        labels = message.labels
        tracer = self.tracer()
        carried = not self._fields.isdisjoint(labels)
        if tracer is None:
            if carried:
                otel_context.attach(propagate.extract(labels))
            return
        parent = propagate.extract(labels) if carried else None
        queue = labels.get("queue") or DEFAULT_QUEUE
        attributes = self._attributes(message, queue, "process")
        name = f"process {queue}"
        if self.link:  # a trace of its own, linked to the one the message came from
            links = _links(trace.get_current_span(parent))
            span = tracer.start_span(
                name, Context(), kind=SpanKind.CONSUMER, attributes=attributes, links=links
            )
        else:
            span = tracer.start_span(name, parent, kind=SpanKind.CONSUMER, attributes=attributes)
        otel_context.attach(trace.set_span_in_context(span, parent))
        run = _Run(message.task_id, span)
        _RUN.set(run)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(run.task_done)

    def ran(self, message: TaskMessage, result: TaskResult[Any]) -> None:
        """Record how the call ended (`post_execute`); a run that had no `pre_execute` (its
        task is unknown here) gets its span now."""
        run = self._run(message)
        if run is None:
            if self.tracer() is None:
                return
            self.start_run(message)
            run = self._run(message)
            assert run is not None
        run.mark(result)
        if result.status is TaskStatus.RETRYING:
            run.span.add_event("conveyor.task.retry", {"conveyor.task.attempt": message.attempt})
        elif result.status is TaskStatus.CANCELLED:
            run.span.add_event("conveyor.task.cancelled")

    def failed(self, message: TaskMessage, result: TaskResult[Any], error: BaseException) -> None:
        """Record the exception (`on_error`); a retried attempt's span ends here."""
        run = self._run(message)
        if run is None:
            return
        run.span.record_exception(error)
        if isinstance(error, TimeoutError | SoftTimeLimitExceeded):
            run.span.add_event("conveyor.task.timeout")
        if result.status is TaskStatus.RETRYING:
            run.end()

    def saved(self, message: TaskMessage, result: TaskResult[Any]) -> None:
        """End the run span once its result is stored and the message settled (`post_save`)."""
        run = self._run(message)
        if run is None:
            return
        run.mark(result)  # a workflow that could not go on failed the step since
        if result.status is TaskStatus.FAILED:
            run.span.add_event("conveyor.task.dead_letter")
        run.end()

    def _run(self, message: TaskMessage) -> _Run | None:
        run = _RUN.get()
        if run is None or run.task_id != message.task_id or run.ended:
            return None
        return run

    def _attributes(
        self, message: TaskMessage, queue: str, operation: str
    ) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.destination.name": queue,
            "messaging.message.id": message.task_id,
            "conveyor.task.name": message.task_name,
            "conveyor.task.attempt": message.attempt,
            "conveyor.engine": self.engine,
        }
        flow = message.labels.get(WORKFLOW_LABEL)
        if isinstance(flow, dict) and isinstance(flow.get("id"), str):
            attributes["messaging.message.conversation_id"] = flow["id"]
        return attributes


def _links(span: Span) -> list[Link]:
    context = span.get_span_context()
    return [Link(context)] if context.is_valid else []
