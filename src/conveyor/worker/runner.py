"""Running one message: decode → resolve → middlewares → call with limits → classify → store →
settle (ack, retry or dead-letter). Each step is a small method; nothing here loops over a queue.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.context import Cleanups, resolve_dependencies
from conveyor.errors import (
    BrokerError,
    ConfigurationError,
    NoResult,
    Reject,
    Requeue,
    Retry,
    SerializationError,
    SoftTimeLimitExceeded,
    TaskCancelled,
    TaskNotFound,
)
from conveyor.message import TaskMessage
from conveyor.options import DEFAULT_OPTIONS, TaskOptions
from conveyor.recent import SIGNED_RECENT
from conveyor.result import TaskResult, TaskStatus, utcnow
from conveyor.serializers import cast
from conveyor.worker.outcome import (
    Outcome,
    build_result,
    describe,
    failed_result,
    log_end,
    worker_name,
)
from conveyor.worker.pools import ProcessPool, ThreadSlot, call_in_process
from conveyor.worker.stats import WorkerStats
from conveyor.worker.timeouts import run_soft_limited
from conveyor.workflows import WORKFLOW_LABEL, advance

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.engines.base import Delivery
    from conveyor.task import Task

__all__ = ["Run", "Runner"]

log = logging.getLogger("conveyor.worker")

#: Seconds a signed message may come early by this worker's clock (other hosts' clocks drift).
_DUE_SLACK = 1.0
#: Seconds before a workflow step whose next steps could not be sent (the broker failed) runs
#: again.
_ADVANCE_RETRY_DELAY = 5.0
#: Seconds a failed task reads "running" while it is moved to the dead letters and its result
#: stored (one round trip each; a worker killed in between leaves it for this long at most).
_SETTLING_SECONDS = 60.0


class BadArguments(SerializationError):
    """The message's arguments do not fit the task's signature."""


@dataclass(slots=True)
class Run:
    """One message being run: what the consumer needs to extend, cancel or hand it back, and
    the options its labels give once decoded."""

    delivery: Delivery
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    slot: ThreadSlot = field(default_factory=ThreadSlot)
    cancel_reason: str | None = None  # "user" (cancel requested) or "shutdown"
    options: TaskOptions = DEFAULT_OPTIONS
    task_name: str = "?"  # known once the message is decoded

    def cancel(self, reason: str) -> None:
        """Stop the run: cancel its coroutine and interrupt its thread."""
        self.cancel_reason = reason
        if self.task is not None:
            self.task.cancel()
        self.slot.interrupt(TaskCancelled)


class Runner:
    """Runs messages for one worker (or in place for `InMemoryBroker(await_inplace=True)`)."""

    def __init__(
        self,
        broker: Broker,
        threads: Executor,
        processes: ProcessPool | None = None,
        *,
        sync_executor: str = "thread",
    ) -> None:
        self.broker = broker
        self.threads = threads
        self.processes = processes or ProcessPool(max(os.cpu_count() or 1, 1))
        #: Where a sync task whose `executor` label is unset runs: "thread" or "process".
        self.sync_executor = sync_executor
        self.mark_running = not broker.transport.locates
        self.stats = WorkerStats(worker_name(), broker.signer.derive(SIGNED_RECENT))

    async def handle(self, run: Run) -> bool:
        """Run one delivery to its end; never raises (bad input is recorded and dead-lettered).

        Returns False when the message was only put back (a rate limit), True otherwise.
        """
        delivery = run.delivery
        try:
            message = self._decode(delivery, run)
        except (SerializationError, ConfigurationError) as exc:
            await self._reject_undecodable(delivery, exc)
            return True
        if self.broker.signer.enabled and await self._replayed(message, run):
            return True
        task = self.broker.find_task(message.task_name)
        if task is None:
            error = TaskNotFound(f"no task named {message.task_name!r} on this worker")
            await self._fail(message, run, error, Outcome(error=error))
            return True
        if await self._rate_limited(message, run):
            return False
        hooks = self.broker.hooks("pre_execute")
        for hook in hooks:
            message = await hook(message)
        try:
            if hooks:  # a middleware may have changed the labels
                run.options = TaskOptions.parse(message.labels, message.task_name)
            outcome = await self._execute(task, message, run)
            await self._settle(task, message, run, outcome)
        finally:
            self.stats.done(message.task_id)
        return True

    # -- steps ------------------------------------------------------------------------------

    def _decode(self, delivery: Delivery, run: Run) -> TaskMessage:
        """The message of a delivery, checked as a producer would have checked it.

        Raises:
            SerializationError: a malformed entry, bad bytes, a bad signature, values too deep
                or too large, or an id other than the delivery's.
            ConfigurationError: a known label has a bad value (from a foreign producer).
        """
        if delivery.problem is not None:
            raise SerializationError(f"malformed entry: {delivery.problem}")
        message = self.broker.codec.decode(delivery.body)
        if message.task_id != delivery.task_id:
            raise SerializationError(f"message id {message.task_id!r} is not the delivery's id")
        run.options = TaskOptions.parse(message.labels, message.task_name)
        run.task_name = message.task_name
        return message

    async def _reject_undecodable(self, delivery: Delivery, exc: Exception) -> None:
        who = delivery.task_id or "an entry without an id"
        log.error("dead-lettered %s: %s", who, exc, extra={"task_id": delivery.task_id})
        await self.broker.transport.dead_letter(delivery, f"{type(exc).__name__}: {exc}")
        if delivery.task_id:
            message = TaskMessage(task_id=delivery.task_id, task_name="")
            await self._store(
                message, DEFAULT_OPTIONS, failed_result(message, exc, Outcome(error=exc))
            )

    async def _replayed(self, message: TaskMessage, run: Run) -> bool:
        """With a secret key: put back a message due later (a copy replayed early), and settle
        without running one whose task has already finished (a copy replayed after its run,
        or a redelivery after its result was stored). True when it was not run."""
        wait = (message.due or 0.0) - time.time()
        if wait > _DUE_SLACK:
            log.warning("%s is due in %.1f s: put back", message.task_id, wait)
            await self.broker.transport.release(run.delivery, delay=wait)
            return True
        data = await self.broker.result_backend.get_result(message.task_id)
        try:
            finished = data is not None and self.broker.decode_result(data).status.is_final
        except SerializationError:  # not ours (unsigned): it does not count
            finished = False
        if finished:
            log.warning("%s has finished already: settled without running", message.task_id)
            await self.broker.transport.ack([run.delivery])
        return finished

    async def _rate_limited(self, message: TaskMessage, run: Run) -> bool:
        rate = run.options.rate_limit
        if rate is None:
            return False
        wait = await self.broker.state.rate_wait(message.task_name, rate.limit, rate.period_seconds)
        if wait <= 0:
            return False
        log.debug("rate limit of %s: %s back for %.3f s", message.task_name, message.task_id, wait)
        await self.broker.transport.release(run.delivery, delay=wait)
        return True

    async def _execute(self, task: Task[Any, Any], message: TaskMessage, run: Run) -> Outcome:
        if log.isEnabledFor(logging.INFO):  # lazy: no `extra` dict per task when INFO is off
            log.info(
                "started %s[%s] attempt %d",
                message.task_name,
                message.task_id,
                message.attempt,
                extra={"task_id": message.task_id, "task_name": message.task_name},
            )
        self.stats.started(message, run.delivery.queue)
        if self.mark_running:
            await self.broker.state.mark(message.task_id, "running", self._ttl(run.options))
        outcome = Outcome(started_at=utcnow())
        start = time.perf_counter()
        try:
            args, kwargs = self._bind(task, message)
            if not task.dependencies:
                outcome.value = await self._call_limited(task, message, args, kwargs, run)
            else:
                outcome.value = await self._call_injected(task, message, args, kwargs, run)
        except asyncio.CancelledError as exc:
            outcome.error = TaskCancelled("cancelled while running")
            if run.cancel_reason is None:  # not ours: the worker's own task is being cancelled
                raise exc from None
        except BaseException as exc:
            outcome.error = exc
        outcome.elapsed = time.perf_counter() - start
        return outcome

    async def _call_injected(
        self,
        task: Task[Any, Any],
        message: TaskMessage,
        args: list[Any],
        kwargs: dict[str, Any],
        run: Run,
    ) -> Any:
        """Call with the task's dependencies resolved, and close the generator ones after it.

        Each sees the task's exception at its `yield` (to roll back, say); the task failed
        whatever they do with it. A cleanup that fails after a success fails the task.
        """
        cleanups = Cleanups()
        try:
            context = self.broker.context_class(message, self.broker)
            kwargs.update(await resolve_dependencies(task.dependencies, context, cleanups))
            value = await self._call_limited(task, message, args, kwargs, run)
        except BaseException as exc:
            await cleanups.close(exc)
            raise
        await cleanups.close(None)
        return value

    def _bind(self, task: Task[Any, Any], message: TaskMessage) -> tuple[list[Any], dict[str, Any]]:
        """The call's positional and keyword arguments, cast to the annotated types."""
        if task.fits_exactly(message.args, message.kwargs):  # the common call: no inspect
            assert task.plain_params is not None
            args, kwargs = list(message.args), dict(message.kwargs)
            if self.broker.cast_types and task.arg_types:
                for i, (name, value) in enumerate(zip(task.plain_params, args, strict=False)):
                    args[i] = self._cast(task, name, value)
                for name, value in kwargs.items():
                    kwargs[name] = self._cast(task, name, value)
            return args, kwargs
        try:
            bound = task.call_signature.bind(*message.args, **message.kwargs)
        except TypeError as exc:
            raise BadArguments(f"arguments do not fit {task.name}: {exc}") from None
        if self.broker.cast_types and task.arg_types:
            params = task.call_signature.parameters
            for name, value in bound.arguments.items():
                kind = params[name].kind
                if kind is inspect.Parameter.VAR_POSITIONAL:  # `*rest: int`: each one an int
                    bound.arguments[name] = tuple(self._cast(task, name, v) for v in value)
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    bound.arguments[name] = {k: self._cast(task, name, v) for k, v in value.items()}
                else:
                    bound.arguments[name] = self._cast(task, name, value)
        return list(bound.args), dict(bound.kwargs)

    @staticmethod
    def _cast(task: Task[Any, Any], name: str, value: Any) -> Any:
        annotation = task.arg_types.get(name)
        if annotation is None or type(value) is annotation:
            return value
        try:
            return cast(value, annotation)
        except SerializationError as exc:
            raise BadArguments(f"argument {name!r} of {task.name}: {exc}") from None

    async def _call_limited(
        self,
        task: Task[Any, Any],
        message: TaskMessage,
        args: list[Any],
        kwargs: dict[str, Any],
        run: Run,
    ) -> Any:
        options = run.options
        timeout = options.timeout_seconds
        if timeout is None:
            timeout = self.broker.defaults.timeout
        soft = options.soft_timeout_seconds
        if timeout is None and not soft:  # no limit: no timer to arm and disarm
            return await self._call(task, message, args, kwargs, run)
        soft_timer = None
        if soft and not (task.is_async or task.is_async_gen):
            soft_timer = asyncio.get_running_loop().call_later(
                soft, run.slot.interrupt, SoftTimeLimitExceeded
            )
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                call = self._call(task, message, args, kwargs, run)
                if soft and (task.is_async or task.is_async_gen):
                    return await run_soft_limited(call, soft)
                return await call
        except TimeoutError:
            if not limit.expired():  # the task's own TimeoutError, not our limit
                raise
            run.slot.interrupt(TimeoutError)
            if self._in_process(task, run):
                self.processes.kill()
            raise TimeoutError(f"{task.name} exceeded its time limit of {timeout} s") from None
        finally:
            if soft_timer is not None:
                soft_timer.cancel()

    async def _call(
        self,
        task: Task[Any, Any],
        message: TaskMessage,
        args: list[Any],
        kwargs: dict[str, Any],
        run: Run,
    ) -> Any:
        if task.is_async:
            return await task.fn(*args, **kwargs)
        if task.is_async_gen:
            items = task.fn(*args, **kwargs).__aiter__().__anext__
            return await self._stream(message, run.options, items)
        loop = asyncio.get_running_loop()
        if self._in_process(task, run):
            module, qualname = task.fn.__module__, task.fn.__qualname__
            return await self.processes.run(call_in_process, module, qualname, tuple(args), kwargs)
        if task.is_gen:
            gen = await loop.run_in_executor(
                self.threads, functools.partial(task.fn, *args, **kwargs)
            )
            items = functools.partial(_next_in_thread, loop, self.threads, run, gen)
            return await self._stream(message, run.options, items)
        return await loop.run_in_executor(
            self.threads, run.slot.wrap(functools.partial(task.fn, *args, **kwargs))
        )

    def _in_process(self, task: Task[Any, Any], run: Run) -> bool:
        """True when the call runs in the process pool: its `executor` label, else the
        worker's choice for sync functions."""
        if task.is_async or task.is_async_gen:
            return False
        return (run.options.executor or self.sync_executor) == "process"

    async def _stream(
        self, message: TaskMessage, options: TaskOptions, next_item: Callable[[], Any]
    ) -> list[Any]:
        backend, ttl = self.broker.result_backend, self._ttl(options)
        items: list[Any] = []
        await backend.reset_stream(message.task_id)  # a redelivery must not repeat old items
        try:
            while True:
                try:
                    item = await next_item()
                except StopAsyncIteration:
                    return items
                items.append(item)
                await backend.push_stream(message.task_id, [self.broker.encode_value(item)], ttl)
        finally:
            await backend.close_stream(message.task_id, ttl)

    # -- outcome ------------------------------------------------------------------------------

    async def _settle(
        self, task: Task[Any, Any], message: TaskMessage, run: Run, outcome: Outcome
    ) -> None:
        error = outcome.error
        if error is None:
            result = build_result(message, TaskStatus.SUCCEEDED, outcome, value=outcome.value)
            try:
                data = self._encode(run.options, result)
            except SerializationError as exc:  # an unencodable return value fails the task
                await self._fail(message, run, exc, outcome)
                return
            await self._finish(message, run, result, data)
        elif isinstance(error, Requeue):
            await self._requeue(message, run)
        elif isinstance(error, NoResult):
            result = build_result(message, TaskStatus.SUCCEEDED, outcome)
            await self._finish(message, run, result, None)
        elif isinstance(error, TaskCancelled) and run.cancel_reason == "shutdown":
            log.info("handed back %s[%s]", message.task_name, message.task_id)
            await self.broker.transport.release(run.delivery)
        elif isinstance(error, TaskCancelled):
            result = build_result(message, TaskStatus.CANCELLED, outcome, error=error)
            await self._finish(message, run, result, self._encode(run.options, result), error)
            if run.cancel_reason == "user":
                await self.broker.state.forget_cancel(message.task_id)
        else:
            delay = self._retry_delay(task, message, run.options, error)
            if delay is not None:
                await self._retry(message, run, error, outcome, delay)
            else:
                await self._fail(message, run, error, outcome)

    async def _requeue(self, message: TaskMessage, run: Run) -> None:
        """Put the message back at once, as it came but for its `requeued` count."""
        message.labels["requeued"] = int(message.labels.get("requeued", 0)) + 1
        await self.broker.transport.release(run.delivery, body=self.broker.codec.encode(message))
        log.info("requeued %s[%s]", message.task_name, message.task_id)

    def _retry_delay(
        self, task: Task[Any, Any], message: TaskMessage, options: TaskOptions, error: BaseException
    ) -> float | None:
        defaults = self.broker.defaults
        limit = (options.retries if options.retries is not None else defaults.retries) or 0
        if isinstance(error, Retry):
            limit = error.max_retries if error.max_retries is not None else max(limit, 3)
            if message.attempt > limit:
                return None
            return error.delay if error.delay is not None else options.retry_delay(message.attempt)
        if isinstance(error, Reject | BadArguments | TaskNotFound) or message.attempt > limit:
            return None
        if not isinstance(error, task.retry_on) or not _named_in(error, message.labels):
            return None
        return options.retry_delay(message.attempt, defaults.retry_delay)

    async def _retry(
        self,
        message: TaskMessage,
        run: Run,
        error: BaseException,
        outcome: Outcome,
        delay: float,
    ) -> None:
        result = build_result(message, TaskStatus.RETRYING, outcome, error=error)
        self.stats.ended(message, result)
        for hook in self.broker.hooks("post_execute"):
            await hook(message, result)
        for hook in self.broker.hooks("on_error"):
            await hook(message, result, error)
        retry = TaskMessage(
            task_id=message.task_id,
            task_name=message.task_name,
            labels=message.labels,
            args=message.args,
            kwargs=message.kwargs,
            attempt=message.attempt + 1,
            due=time.time() + delay if delay > 0 else None,
        )
        body = self.broker.codec.encode(retry)
        await self.broker.state.mark(message.task_id, TaskStatus.RETRYING, self._ttl(run.options))
        await self.broker.transport.release(run.delivery, body=body, delay=delay)
        log.warning(
            "retrying %s[%s] in %.2f s after attempt %d: %s",
            message.task_name,
            message.task_id,
            delay,
            message.attempt,
            describe(error),
            extra={"task_id": message.task_id, "task_name": message.task_name},
        )

    async def _fail(
        self, message: TaskMessage, run: Run, error: BaseException, outcome: Outcome
    ) -> None:
        """Record a final failure and move the message to the dead-letter queue."""
        cause = error.exc if isinstance(error, Retry) and error.exc is not None else error
        result = failed_result(message, cause, outcome)
        await self._finish(message, run, result, self._encode(run.options, result), cause)

    async def _finish(
        self,
        message: TaskMessage,
        run: Run,
        result: TaskResult[Any],
        data: bytes | None,
        error: BaseException | None = None,
    ) -> None:
        """Run the hooks, then store the result (`data`) and settle the delivery: ack a success
        or a cancel with its result; dead-letter a failure first, so whoever sees the FAILED
        result also finds the message in the dead-letter queue. Between the two the failure
        reads "running" (a mark), so its status is never unknown.

        A workflow step first sends what follows it (or ends the workflow), so a crash before
        the settle loses nothing.
        """
        self.stats.ended(message, result)
        for hook in self.broker.hooks("post_execute"):
            await hook(message, result)
        if WORKFLOW_LABEL in message.labels:
            advanced = await self._advance(message, run.delivery, result)
            if advanced is None:
                return  # put back: delivered again later
            if advanced[0] is not result:  # the workflow could not go on: the step failed
                result, error = advanced
                data = self._encode(run.options, result)
        if error is not None:
            for hook in self.broker.hooks("on_error"):
                await hook(message, result, error)
        await self._settle_final(message, run, result, data)
        for hook in self.broker.hooks("post_save"):
            await hook(message, result)
        log_end(message, result)

    async def _settle_final(
        self, message: TaskMessage, run: Run, result: TaskResult[Any], data: bytes | None
    ) -> None:
        """Store the result and settle the delivery: ack with it, or dead-letter a failure
        first and read "running" until its result is stored."""
        transport, results = self.broker.transport, self.broker.result_backend
        ttl = self._ttl(run.options)
        if result.status is not TaskStatus.FAILED:
            await transport.ack_with_result(run.delivery, results, data, ttl)
            return
        if data is not None:
            await self.broker.state.mark(message.task_id, "running", _SETTLING_SECONDS)
        await transport.dead_letter(run.delivery, f"{result.error_type}: {result.error_message}")
        if data is not None:
            await results.set_result(message.task_id, data, ttl)

    async def _advance(
        self, message: TaskMessage, delivery: Delivery, result: TaskResult[Any]
    ) -> tuple[TaskResult[Any], BaseException | None] | None:
        """Send what follows a workflow step, or end the workflow.

        Returns:
            None when the step was put back to try again later (the broker failed, or another
            delivery is sending what follows); else the step's result: `result`, or a failure
            with its error when the workflow could not go on (it then ended with that failure).
        """
        stopped: BaseException | None = None
        try:
            try:
                wait = await advance(self.broker, message, result)
            except (BrokerError, OSError):
                raise
            except Exception as exc:  # deterministic: a value gone, an unencodable argument
                stopped = exc
                outcome = Outcome(error=exc, started_at=result.started_at)
                result = failed_result(message, exc, outcome)
                wait = await advance(self.broker, message, result)  # ends the workflow with it
        except (BrokerError, OSError) as exc:
            log.warning("workflow step %s: %s; trying again", message.task_id, describe(exc))
            wait = _ADVANCE_RETRY_DELAY
        if wait > 0:
            await self.broker.transport.release(delivery, delay=wait)
            return None
        return result, stopped

    async def _store(
        self, message: TaskMessage, options: TaskOptions, result: TaskResult[Any]
    ) -> None:
        data = self._encode(options, result)
        if data is not None:
            await self.broker.result_backend.set_result(message.task_id, data, self._ttl(options))

    def _encode(self, options: TaskOptions, result: TaskResult[Any]) -> bytes | None:
        """The encoded result, or None when the task stores none.

        Raises:
            SerializationError: the return value cannot be encoded.
        """
        if not options.store_result:
            return None
        return self.broker.encode_result(result)

    def _ttl(self, options: TaskOptions) -> float | None:
        """Seconds the task's result (and what else it leaves) is kept."""
        ttl = options.result_ttl_seconds
        return ttl if ttl is not None else self.broker.result_backend.default_ttl


def _named_in(error: BaseException, labels: dict[str, Any]) -> bool:
    """True unless a `retry_on` label (qualified class names) leaves `error` out."""
    names = labels.get("retry_on")
    if not names:
        return True
    mro = {f"{kind.__module__}.{kind.__qualname__}" for kind in type(error).__mro__}
    return not mro.isdisjoint(names)


async def _next_in_thread(
    loop: asyncio.AbstractEventLoop, threads: Executor, run: Run, gen: Any
) -> Any:
    sentinel = object()
    item = await loop.run_in_executor(
        threads, run.slot.wrap(functools.partial(next, gen, sentinel))
    )
    if item is sentinel:
        raise StopAsyncIteration
    return item
