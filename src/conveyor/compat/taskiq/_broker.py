"""Taskiq's broker surface on conveyor's brokers: `AsyncBroker` (events, `TaskiqState`, the
handle and context classes) mixed into conveyor's broker classes, and the two brokers of
Taskiq's core package.

Events: `CLIENT_STARTUP` / `CLIENT_SHUTDOWN` handlers run when a process that only sends starts
or stops the broker; `WORKER_STARTUP` / `WORKER_SHUTDOWN` in a worker (`conveyor worker`,
`broker.run()`, where `broker.is_worker_process` is True); an `InMemoryBroker` is both, so it
runs both, as Taskiq's does. Handlers take the broker's `TaskiqState` and may be sync or async;
they run before the broker connects on startup and before it disconnects on shutdown.
"""

from __future__ import annotations

import enum
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Self

from conveyor import brokers
from conveyor.compat.taskiq._result import AsyncTaskiqTask
from conveyor.context import Context as _Context
from conveyor.engines.base import ResultBackend, StateStore
from conveyor.message import TaskMessage
from conveyor.state import State

__all__ = [
    "AsyncBroker",
    "Context",
    "EventHandler",
    "InMemoryBroker",
    "TaskiqEvents",
    "TaskiqState",
    "ZeroMQBroker",
]


class TaskiqEvents(enum.StrEnum):
    """When `broker.on_event` handlers run."""

    CLIENT_STARTUP = "CLIENT_STARTUP"
    CLIENT_SHUTDOWN = "CLIENT_SHUTDOWN"
    WORKER_STARTUP = "WORKER_STARTUP"
    WORKER_SHUTDOWN = "WORKER_SHUTDOWN"


#: Names conveyor's `State` uses: an app value stored under one of them would break it.
_RESERVED = frozenset(name for name in dir(State) if not name.startswith("__")) | {"store"}


class TaskiqState(State):
    """The broker's state (`broker.state`): conveyor's shared `State`, which also holds the
    app's own values as attributes or items (`state.pool = ...`, `state["pool"]`), set by event
    handlers and read by tasks through `context.state` or `TaskiqDepends()`.

    Raises:
        AttributeError: setting a name conveyor's `State` uses (such as `store` or `mark`).
    """

    def __init__(self, store: StateStore | None = None) -> None:
        object.__setattr__(self, "store", store)

    def __getattr__(self, name: str) -> Any:
        """Only for names never set: any other name may hold an app value."""
        raise AttributeError(f"the state has no {name!r} (set it in a startup handler)")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _RESERVED:
            raise AttributeError(f"state.{name} is used by conveyor: pick another name")
        object.__setattr__(self, name, value)

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def __delitem__(self, name: str) -> None:
        if name in _RESERVED or name not in vars(self):
            raise KeyError(name)
        delattr(self, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name not in _RESERVED and name in vars(self)

    def get(self, name: str, default: Any = None) -> Any:
        """The value stored under `name`, or `default`."""
        return vars(self)[name] if name in self else default


class Context(_Context):
    """Taskiq's `Context`: conveyor's, whose `state` is the broker's `TaskiqState`."""

    def __init__(self, message: TaskMessage, broker: brokers.Broker) -> None:
        super().__init__(message, broker)
        self.state = broker.state


EventHandler = Callable[[TaskiqState], Awaitable[None] | None]


class AsyncBroker(brokers.Broker):
    """Taskiq's broker interface over a conveyor broker: mixed into each compat broker class.

    Attributes:
        state: the `TaskiqState` event handlers fill and tasks read.
        event_handlers: handlers by event.
    """

    handle_class = AsyncTaskiqTask
    context_class = Context
    state: TaskiqState

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = TaskiqState(self.store)
        self.dependency_context[TaskiqState] = self.state
        self.event_handlers: defaultdict[TaskiqEvents, list[EventHandler]] = defaultdict(list)

    @property
    def id_generator(self) -> Callable[[], str]:
        """Makes task ids (Taskiq's name for `task_id_generator`)."""
        return self.task_id_generator

    def with_id_generator(self, task_id_generator: Callable[[], str]) -> Self:
        """Make task ids with `task_id_generator`; returns the broker."""
        self.task_id_generator = task_id_generator
        return self

    def on_event(self, *events: TaskiqEvents) -> Callable[[EventHandler], EventHandler]:
        """Decorate a handler to run at each of `events`."""

        def register(handler: EventHandler) -> EventHandler:
            for event in events:
                self.add_event_handler(event, handler)
            return handler

        return register

    def add_event_handler(self, event: TaskiqEvents, handler: EventHandler) -> None:
        """Run `handler(state)` at `event`."""
        self.event_handlers[event].append(handler)

    def with_event_handlers(self, event: TaskiqEvents, *handlers: EventHandler) -> Self:
        """Add handlers for `event`; returns the broker."""
        self.event_handlers[event].extend(handlers)
        return self

    def _events(self, stage: str) -> list[TaskiqEvents]:
        """The events of `stage` ("STARTUP" or "SHUTDOWN") this process runs."""
        side = "WORKER" if self.is_worker_process else "CLIENT"
        return [TaskiqEvents[f"{side}_{stage}"]]

    async def _fire(self, events: list[TaskiqEvents]) -> None:
        for event in events:
            for handler in self.event_handlers[event]:
                outcome = handler(self.state)
                if inspect.isawaitable(outcome):
                    await outcome

    async def startup(self) -> None:
        """Run the startup handlers, then start the broker."""
        if not self._started:
            await self._fire(self._events("STARTUP"))
        await super().startup()

    async def shutdown(self) -> None:
        """Run the shutdown handlers, then stop the broker."""
        if self._started:
            await self._fire(self._events("SHUTDOWN"))
        await super().shutdown()


class InMemoryBroker(AsyncBroker, brokers.InMemoryBroker):
    """Taskiq's `InMemoryBroker`: tasks run in this process's event loop; both the client's and
    the worker's event handlers run.

    Args:
        sync_tasks_pool_size: threads for sync tasks.
        max_stored_results: results kept in memory (-1: all).
        cast_types: cast arguments and results to the annotations.
        max_async_tasks: tasks run at once.
        propagate_exceptions: accepted; a task's exception always reaches its generator
            dependencies here.
        await_inplace: `kiq` runs the task before it returns.
        result_backend / task_id_generator / logs_format: the older constructor's arguments.
    """

    def __init__(
        self,
        sync_tasks_pool_size: int = 4,
        max_stored_results: int = 100,
        cast_types: bool = True,
        max_async_tasks: int = 30,
        propagate_exceptions: bool = True,
        await_inplace: bool = False,
        *,
        result_backend: ResultBackend | None = None,
        task_id_generator: Callable[[], str] | None = None,
        logs_format: str | None = None,
    ) -> None:
        super().__init__(
            sync_tasks_pool_size,
            max_stored_results,
            cast_types,
            result_backend,
            task_id_generator,
            await_inplace,
            logs_format=logs_format,
            max_async_tasks=max_async_tasks,
        )

    def _events(self, stage: str) -> list[TaskiqEvents]:
        return [TaskiqEvents[f"CLIENT_{stage}"], TaskiqEvents[f"WORKER_{stage}"]]


class ZeroMQBroker(AsyncBroker, brokers.ZeroMQBroker):
    """Taskiq's `ZeroMQBroker(zmq_pub_host=..., zmq_sub_host=...)` (conveyor's, with events)."""
