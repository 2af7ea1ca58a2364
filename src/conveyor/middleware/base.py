"""The `Middleware` base class: hooks around sending and running tasks, each sync or async."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from conveyor.message import TaskMessage

if TYPE_CHECKING:
    from conveyor.broker import Broker
    from conveyor.result import TaskResult

__all__ = ["HOOKS", "Middleware", "TaskiqMiddleware", "async_hooks"]

#: Every hook name, in the order a task meets them.
HOOKS = (
    "startup",
    "shutdown",
    "pre_send",
    "post_send",
    "pre_execute",
    "post_execute",
    "on_error",
    "post_save",
)


class Middleware:
    """Override any hook, as a plain or an `async` method; the broker awaits either.

    Hooks that return a message (`pre_send`, `pre_execute`) may return the same message changed
    in place or a new one. `self.broker` is set when the middleware is added to a broker.
    """

    broker: Broker

    def set_broker(self, broker: Broker) -> None:
        """Called once when added with `broker.add_middlewares`."""
        self.broker = broker

    def startup(self) -> Any:
        """Called when the broker starts (in producers and workers)."""

    def shutdown(self) -> Any:
        """Called when the broker shuts down."""

    def pre_send(self, message: TaskMessage) -> TaskMessage | Awaitable[TaskMessage]:
        """Called before a message is encoded and sent; return the message to send."""
        return message

    def post_send(self, message: TaskMessage) -> Any:
        """Called after a message was sent."""

    def pre_execute(self, message: TaskMessage) -> TaskMessage | Awaitable[TaskMessage]:
        """Called in the worker before the task runs; return the message to run."""
        return message

    def post_execute(self, message: TaskMessage, result: TaskResult[Any]) -> Any:
        """Called after the task ran, whatever its outcome, before the result is stored."""

    def on_error(
        self, message: TaskMessage, result: TaskResult[Any], exception: BaseException
    ) -> Any:
        """Called when the task raised, before the retry decision's outcome is stored."""

    def post_save(self, message: TaskMessage, result: TaskResult[Any]) -> Any:
        """Called after the result was stored."""


#: The seed's name for the base class (`from taskiq import TaskiqMiddleware`).
TaskiqMiddleware = Middleware

AsyncHook = Callable[..., Awaitable[Any]]


def async_hooks(middleware: Middleware) -> dict[str, AsyncHook]:
    """Return the hooks `middleware` overrides, each made awaitable once, here, not per call."""
    found: dict[str, AsyncHook] = {}
    for name in HOOKS:
        method = getattr(middleware, name)
        if getattr(type(middleware), name) is getattr(Middleware, name):
            continue
        found[name] = method if inspect.iscoroutinefunction(method) else _awaitable(method)
    return found


def _awaitable(method: Callable[..., Any]) -> AsyncHook:
    async def hook(*args: Any) -> Any:
        value = method(*args)
        if inspect.isawaitable(value):  # a sync def that returns a coroutine still works
            value = await value
        return value

    hook.__name__ = getattr(method, "__name__", "hook")
    return hook
