"""`Broker`: the application object: task registry, middlewares, codec and the send path.

An engine gives it a `MessageTransport`, a `StateStore` and a `ResultBackend` (the public broker
classes of `conveyor.brokers` wire them from a URL); everything a user does with tasks goes
through this class whatever the engine, and the semantics that span the three (task status,
cancel, `unique_for`, dead-letter requeue) are written here once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, overload

from conveyor.context import Context
from conveyor.engines.base import (
    DeadLetter,
    MessageTransport,
    Outgoing,
    Publisher,
    ResultBackend,
    StateStore,
)
from conveyor.errors import ConfigurationError, ResultTimeout
from conveyor.message import Codec, TaskMessage
from conveyor.middleware.base import HOOKS, AsyncHook, Middleware, async_hooks
from conveyor.options import TaskDefaults, TaskOptions
from conveyor.result import TaskHandle, TaskResult, TaskStatus, utcnow
from conveyor.schedules import parse_label_schedules
from conveyor.serializers import Signer, cast, get_serializer
from conveyor.state import State
from conveyor.task import (
    AsyncGenTask,
    AsyncTask,
    GenTask,
    Signature,
    SyncTask,
    Task,
    TaskDecorator,
    default_task_name,
    task_class,
)

if TYPE_CHECKING:
    from conveyor.portal import Portal

__all__ = ["Broker"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")


class Broker:
    """The application object: register tasks with `@broker.task`, send them with `kiq`.

    Attributes:
        dependency_context: values `Depends()` of a type resolves to (see
            `add_dependency_context`).
        dependency_overrides: `{dependency: replacement}`, applied wherever the dependency is
            asked for (tests).
        is_worker_process: True in a process that runs a worker (the CLI, `broker.run()`).
        handle_class / context_class: what `kiq` returns and what a task's `Context` is.

    Args:
        transport: moves messages.
        store: keeps the small shared state (`conveyor.state`).
        result_backend: stores results, progress and streams.
        serializer: "json" (default), "msgpack" or "pickle" (only when asked for).
        task_id_generator: makes task ids; a random UUID hex by default.
        cast_types: cast arguments and results to the functions' annotations.
        secret_key: signs messages with HMAC; `CONVEYOR_SECRET_KEY` when None.
    """

    def __init__(
        self,
        transport: MessageTransport,
        store: StateStore,
        result_backend: ResultBackend,
        *,
        serializer: str = "json",
        task_id_generator: Callable[[], str] | None = None,
        cast_types: bool = True,
        secret_key: str | bytes | None = None,
        defaults: TaskDefaults | None = None,
    ) -> None:
        self.transport = transport
        self.store = store
        self.state = State(store)
        self.result_backend = result_backend
        self.serializer = get_serializer(serializer)
        self.signer = Signer(secret_key or os.environ.get("CONVEYOR_SECRET_KEY"))
        self.codec = Codec(self.serializer, self.signer)
        #: Signs results, progress, stream items and workflow values when a key is set: what a
        #: store returns is trusted only with its signature (a planted pickle never loads).
        self.stored = self.signer.derive("stored result")
        self.task_id_generator = task_id_generator or _uuid_hex
        self.cast_types = cast_types
        self.defaults = defaults or TaskDefaults()
        self.middlewares: list[Middleware] = []
        self._hooks: dict[str, list[AsyncHook]] = {name: [] for name in HOOKS}
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._routes: list[tuple[str, dict[str, Any]]] = []
        self._route_cache: dict[str, dict[str, Any]] = {}
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._portal: Portal | None = None
        self.dependency_context: dict[Any, Any] = {}
        self.dependency_overrides: dict[Any, Callable[..., Any]] = {}
        self.is_worker_process = False
        self._register(_ping, "conveyor:ping", {})

    handle_class: type[TaskHandle[Any]] = TaskHandle
    context_class: type[Context] = Context

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.transport.safe_url}>"

    def add_dependency_context(self, values: dict[Any, Any]) -> None:
        """Make `Depends()` of each key (a type, usually) resolve to its value in every task,
        e.g. `{Request: request}` for the FastAPI integration or a fake in tests."""
        self.dependency_context.update(values)

    # -- registry ---------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...  # type: ignore[overload-overlap]  # first match wins
    @overload
    def task(self, fn: Callable[P, AsyncIterator[Y]], /) -> AsyncGenTask[P, Y]: ...  # type: ignore[overload-overlap]  # first match wins
    @overload
    def task(self, fn: Callable[P, Iterator[Y]], /) -> GenTask[P, Y]: ...  # type: ignore[overload-overlap]  # first match wins
    @overload
    def task(self, fn: Callable[P, R], /) -> SyncTask[P, R]: ...
    @overload
    def task(
        self,
        task_name: str | None = None,
        /,
        *,
        retry_on: Sequence[type[BaseException]] | None = None,
        **labels: Any,
    ) -> TaskDecorator: ...

    def task(self, fn_or_name: Any = None, /, **labels: Any) -> Any:
        """Register a function as a task: `@broker.task` or `@broker.task("name", **labels)`.

        Every keyword becomes a label (see the README's table of known labels); `task_name`
        sets the name, `retry_on` the exception types that are retried.

        Raises:
            ConfigurationError: a known label has a bad value, naming the task.
        """
        if callable(fn_or_name):
            return self._register(fn_or_name, None, labels)
        name = fn_or_name if fn_or_name is not None else labels.pop("task_name", None)

        def decorator(fn: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(fn, name, dict(labels))

        return decorator

    def _register(
        self, fn: Callable[..., Any], name: str | None, labels: dict[str, Any]
    ) -> Task[Any, Any]:
        name = name or labels.pop("task_name", None) or default_task_name(fn)
        retry_on = tuple(labels.pop("retry_on", None) or (Exception,))
        TaskOptions.parse(labels, name)
        existing = self._tasks.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ConfigurationError(
                f"task name {name!r} is already used by {existing.fn.__qualname__}"
            )
        schedules = labels.pop("schedule", None)
        task = task_class(fn)(self, fn, name, labels, retry_on)
        if schedules is not None:
            task.schedules = parse_label_schedules(name, schedules, task.call_signature)
        self._tasks[name] = task
        return task

    def register_task(
        self, fn: Callable[..., Any], task_name: str | None = None, **labels: Any
    ) -> Task[Any, Any]:
        """Register `fn` as a task without decorating it (Taskiq's `register_task`)."""
        return self._register(fn, task_name, labels)

    def find_task(self, name: str) -> Task[Any, Any] | None:
        """Return the task registered as `name`, or None."""
        return self._tasks.get(name)

    def get_all_tasks(self) -> dict[str, Task[Any, Any]]:
        """Return every registered task by name."""
        return dict(self._tasks)

    def add_routes(self, routes: dict[str, dict[str, Any]]) -> None:
        """Set labels for every task whose name matches a glob, like Celery's `task_routes`.

        A pattern matches a task's name (`app.tasks:send`) or its Celery spelling
        (`app.tasks.send`), so `"app.tasks.*"` routes every task of that module. Labels on the
        decorator or the kicker win over routes. A route that matches no registered task when
        the broker starts is logged as a warning.
        """
        for pattern, labels in routes.items():
            TaskOptions.parse(labels, pattern)
            self._routes.append((pattern, dict(labels)))
        self._route_cache.clear()

    def route_labels(self, task_name: str) -> dict[str, Any]:
        """The labels routes give to `task_name`."""
        found = self._route_cache.get(task_name)
        if found is None:
            found = {}
            for pattern, labels in self._routes:
                if _routed(task_name, pattern):
                    found.update(labels)
            self._route_cache[task_name] = found
        return found

    # -- middlewares and result backend -------------------------------------------------------

    def add_middlewares(self, *middlewares: Middleware | Iterable[Middleware]) -> None:
        """Add middlewares, given one by one or as lists; their hooks run in the order added."""
        for middleware in _flat(middlewares):
            middleware.set_broker(self)
            self.middlewares.append(middleware)
            for name, hook in async_hooks(middleware).items():
                self._hooks[name].append(hook)

    def with_middlewares(self, *middlewares: Middleware) -> Self:
        """Add middlewares and return the broker, for chaining at construction."""
        self.add_middlewares(*middlewares)
        return self

    def with_result_backend(self, result_backend: ResultBackend) -> Self:
        """Store results in `result_backend` instead of the engine's default."""
        self.result_backend = result_backend
        return self

    def hooks(self, name: str) -> list[AsyncHook]:
        """The awaitable hooks of every middleware that overrides `name`."""
        return self._hooks[name]

    # -- lifecycle --------------------------------------------------------------------------

    async def startup(self) -> None:
        """Connect the transport, the state store and the result backend; start middlewares."""
        if self._started:
            return
        await self.transport.startup()
        await self.store.startup()
        await self.result_backend.startup()
        for hook in self._hooks["startup"]:
            await hook()
        self._started = True
        self._warn_idle_routes()

    def _warn_idle_routes(self) -> None:
        names = list(self._tasks)
        for pattern, _ in self._routes:
            if not any(_routed(name, pattern) for name in names):
                log.warning("route %r matches no registered task of %r", pattern, self)

    async def shutdown(self) -> None:
        """Stop middlewares and close connections."""
        if not self._started:
            return
        self._started = False
        for hook in self._hooks["shutdown"]:
            await hook()
        await self.result_backend.shutdown()
        await self.store.shutdown()
        await self.transport.shutdown()

    def shutdown_sync(self) -> None:
        """Shut down a broker used from sync code (`kiq_sync`) and stop its portal thread."""
        portal, self._portal = self._portal, None
        if portal is not None:
            portal.call(self.shutdown())
            portal.close()

    async def ensure_started(self) -> None:
        """Start the broker if nobody did, so a script can `kiq` without `startup()`."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            await self.startup()

    async def __aenter__(self) -> Broker:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- sending ------------------------------------------------------------------------------

    async def send_task(
        self,
        task: Task[Any, R],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any] | None = None,
        task_id: str | None = None,
        publisher: Publisher | None = None,
    ) -> TaskHandle[R]:
        """Send one call of `task`; `kiq` and kickers end here (`publisher`: the caller's
        transaction's, from `with_connection`)."""
        self.check_call(task, args, kwargs)
        message = self.build_message(task.name, args, kwargs, task.labels, labels, task_id)
        await self.send([message], publisher)
        return self.handle_class(self, message.task_id, task.name, task.return_type)

    def check_call(self, task: Task[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Check a call before it is sent: the arguments fit `task`'s signature and, when the
        broker casts arguments, each will cast to its annotation in the worker.

        Raises:
            TypeError: naming the task (and the argument) that does not fit.
        """
        if not task.fits_exactly(args, kwargs):
            try:
                task.call_signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{task.name}: {exc}") from None
        if self.cast_types and task.checked_types:
            task.check_types(args, kwargs, self.serializer)

    async def kiq_by_name(self, task_name: str, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """Send a task by its registered name, without importing its function."""
        task = self._tasks.get(task_name)
        if task is not None:
            return await self.send_task(task, args, kwargs)
        message = self.build_message(task_name, args, kwargs, None, None, None)
        await self.send([message])
        return self.handle_class(self, message.task_id, task_name)

    async def kiq_many(
        self, signatures: Iterable[Signature[R]], *, connection: object = None
    ) -> list[TaskHandle[R]]:
        """Send many calls in one round trip; handles come back in the same order.

        With `connection`, they are enqueued inside the caller's open transaction on it, as
        `Kicker.with_connection` does.

        Raises:
            ConfigurationError: a `connection` the engine cannot enqueue through.
            TypeError: a call of a known task does not fit it (nothing is sent).
        """
        publisher = None if connection is None else self.transport.transactional(connection)
        messages, handles = [], []
        for sig in signatures:
            task = sig.task or self._tasks.get(sig.task_name)
            if task is not None:
                self.check_call(task, sig.args, sig.kwargs)
            message = self.build_message(
                sig.task_name, sig.args, sig.kwargs, task.labels if task else None, sig.labels, None
            )
            messages.append(message)
            handles.append(
                self.handle_class(
                    self, message.task_id, sig.task_name, task.return_type if task else Any
                )
            )
        await self.send(messages, publisher)
        return handles

    def build_message(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        task_labels: dict[str, Any] | None,
        call_labels: dict[str, Any] | None,
        task_id: str | None,
    ) -> TaskMessage:
        """Merge route, task and call labels (later wins) into a new message."""
        labels = {**self.route_labels(task_name), **(task_labels or {}), **(call_labels or {})}
        if call_labels and None in call_labels.values():
            labels = {k: v for k, v in labels.items() if v is not None}
        return TaskMessage(
            task_id=task_id or self.task_id_generator(),
            task_name=task_name,
            labels=labels,
            args=list(args),
            kwargs=kwargs,
        )

    async def send(self, messages: list[TaskMessage], publisher: Publisher | None = None) -> None:
        """Run `pre_send` hooks, encode, publish in one batch (through `publisher` when given),
        run `post_send` hooks.

        A message whose `unique_for` window is held by an earlier send is left out.

        Raises:
            SerializationError: (a `TypeError`) an argument cannot be encoded.
            ConfigurationError: a known label has a bad value.
            BrokerError: the transport failed.
        """
        await self.ensure_started()
        for hook in self._hooks["pre_send"]:
            messages = [await hook(message) for message in messages]
        encoded = []  # every message is checked and encoded before anything is claimed
        for message in messages:
            options = TaskOptions.parse(message.labels, message.task_name)
            encoded.append((self.outgoing(message, options), options.unique_for_seconds))
        outgoing, claimed = await self._claim_unique(encoded)
        if outgoing:
            try:
                await (publisher or self.publish)(outgoing)
            except BaseException:
                for task_id in claimed:  # nothing was sent: a retry of this kiq must not be deduped
                    await self.state.release_unique(task_id)
                raise
        for hook in self._hooks["post_send"]:
            for message in messages:
                await hook(message)

    async def _claim_unique(
        self, encoded: list[tuple[Outgoing, float | None]]
    ) -> tuple[list[Outgoing], list[str]]:
        """The messages to publish, leaving out those whose `unique_for` window an earlier send
        holds; and the ids whose window this send took."""
        outgoing, claimed = [], []
        for out, unique_for in encoded:
            if unique_for:
                if not await self.state.claim_unique(out.task_id, unique_for):
                    continue
                claimed.append(out.task_id)
            outgoing.append(out)
        return outgoing, claimed

    def outgoing(self, message: TaskMessage, options: TaskOptions | None = None) -> Outgoing:
        """Encode and sign `message` for the transport (`options`: its labels', parsed)."""
        if options is None:
            options = TaskOptions.parse(message.labels, message.task_name)
        due = options.due_at()
        if due is not None:
            message.due = due
        return Outgoing(
            task_id=message.task_id,
            queue=options.queue,
            body=self.codec.encode(message),
            priority=options.priority,
            eta=due,
        )

    async def publish(self, outgoing: list[Outgoing]) -> None:
        """Hand encoded messages to the transport (`InMemoryBroker` may run them in place)."""
        await self.transport.publish(outgoing)

    # -- results ------------------------------------------------------------------------------

    def get_handle(self, task_id: str) -> TaskHandle[Any]:
        """Rebuild a handle from a task id, e.g. for an HTTP status page."""
        return self.handle_class(self, task_id)

    def encode_value(self, value: Any) -> bytes:
        """Encode (and sign, with a key) a value: progress, a stream item, a group member's."""
        return self.stored.sign(self.serializer.encode(value))

    def decode_value(self, data: bytes) -> Any:
        """Decode a value encoded with `encode_value`.

        Raises:
            SerializationError: malformed, or (`SignatureError`) not signed with the key.
        """
        return self.serializer.decode(self.stored.verify(data), object)

    def encode_result(self, result: TaskResult[Any]) -> bytes:
        """Encode (and sign, with a key) a result for the result backend."""
        return self.stored.sign(self.serializer.encode(result))

    def decode_result(self, data: bytes, return_type: Any = Any) -> TaskResult[Any]:
        """Decode a stored result, casting the return value to `return_type` when known.

        Raises:
            SerializationError: malformed, or (`SignatureError`) not signed with the key.
        """
        result = self.serializer.decode(self.stored.verify(data), TaskResult)
        if self.cast_types and return_type is not Any and result.status is TaskStatus.SUCCEEDED:
            result.return_value = cast(result.return_value, return_type)
        return result

    async def store_result(self, result: TaskResult[Any], ttl: float | None) -> None:
        """Encode and store a final result."""
        await self.result_backend.set_result(result.task_id, self.encode_result(result), ttl)

    async def task_status(self, task_id: str) -> TaskStatus | None:
        """The status of a task: from its result, else where the transport holds it, else the
        status the state store recorded (a waiting retry, or a run the transport cannot see)."""
        await self.ensure_started()
        data = await self.result_backend.get_result(task_id)
        if data is not None:
            return self.decode_result(data).status
        where = await self.transport.locate(task_id)
        if where == "leased":
            return TaskStatus.RUNNING
        marked = await self.state.marked(task_id)
        if where is not None:
            if marked == TaskStatus.RETRYING:
                return TaskStatus.RETRYING
            return TaskStatus.SCHEDULED if where == "delayed" else TaskStatus.QUEUED
        if marked in _MARKS:
            return TaskStatus(marked)
        # Nothing held it: it may have been settled since the first read, result and all.
        data = await self.result_backend.get_result(task_id)
        return None if data is None else self.decode_result(data).status

    async def get_progress(self, task_id: str) -> Any:
        """The last progress a task reported, or None."""
        await self.ensure_started()
        data = await self.result_backend.get_progress(task_id)
        return None if data is None else self.decode_value(data)

    async def set_progress(self, task_id: str, progress: Any) -> None:
        """Record a task's progress (`Context.set_progress` ends here)."""
        data = self.encode_value(progress)
        await self.result_backend.set_progress(task_id, data, self.result_backend.default_ttl)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: remove it if it waits, ask its worker to stop it if it runs.

        Returns True when it was removed before it ran (its result then reads "cancelled").
        """
        await self.ensure_started()
        if not await self.transport.remove(task_id):
            await self.state.request_cancel(task_id)
            return False
        now = utcnow()
        result: TaskResult[Any] = TaskResult(
            task_id=task_id,
            task_name="",
            status=TaskStatus.CANCELLED,
            error_type="TaskCancelled",
            error_module="conveyor.errors",
            error_message="cancelled before it ran",
            started_at=now,
            finished_at=now,
            attempts=0,
        )
        await self.store_result(result, self.result_backend.default_ttl)
        return True

    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Send dead letters (all when None) back to their queues; return how many.

        Each one's failed result is forgotten (its handle waits for the new run), then it is
        published again and dropped from the dead letters; a letter that fails again while
        this runs is left for the next requeue.
        """
        await self.ensure_started()
        if task_ids is not None:
            wanted = set(task_ids)
            letters = await self.transport.dead_letters(_REQUEUE_SCAN)
            return await self._requeue([d for d in letters if d.task_id in wanted])
        started, moved = time.time(), 0
        while True:
            batch = await self.transport.dead_letters(_REQUEUE_BATCH)
            chosen = [letter for letter in batch if letter.failed_at <= started]
            moved += await self._requeue(chosen)
            if len(batch) < _REQUEUE_BATCH or len(chosen) < len(batch):
                return moved

    async def _requeue(self, letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        await asyncio.gather(*(self.result_backend.delete(d.task_id) for d in letters))
        await self.transport.publish(
            [Outgoing(d.task_id, d.queue, d.body, d.priority) for d in letters]
        )
        return await self.transport.drop_dead(letters)

    async def wait_all(self, timeout: float | None = None) -> None:
        """Wait until no message is queued, scheduled or running on any queue.

        Raises:
            ResultTimeout: messages were still pending after `timeout` seconds.
        """
        await self.ensure_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            stats = await self.transport.queue_stats()
            if not any(q.ready or q.scheduled or q.running for q in stats):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"tasks still pending after {timeout} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)


async def _ping() -> str:
    """The built-in task `conveyor ping` sends through a worker."""
    return "pong"


#: Statuses the state store records for `task_status`.
_MARKS = frozenset({TaskStatus.RUNNING, TaskStatus.RETRYING})
#: Dead letters read per round of `requeue_dead` of every letter, and at most by id.
_REQUEUE_BATCH, _REQUEUE_SCAN = 500, 100_000


def _routed(task_name: str, pattern: str) -> bool:
    """True when `pattern` matches the task's name or its Celery spelling (dots only)."""
    return fnmatch.fnmatchcase(task_name, pattern) or fnmatch.fnmatchcase(
        task_name.replace(":", "."), pattern
    )


def _flat(items: Iterable[Middleware | Iterable[Middleware]]) -> Iterator[Middleware]:
    for item in items:
        if isinstance(item, Middleware):
            yield item
        else:
            yield from item


def _uuid_hex() -> str:
    """A random 128-bit id in hex, as `uuid4().hex` but without building a UUID object."""
    return os.urandom(16).hex()
