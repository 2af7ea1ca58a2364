"""QTasks' asyncio application, `QueueTasks`, on a conveyor broker.

    app = QueueTasks()                      # conveyor's embedded SQLite default, or broker_url=
    @app.task(name="send_reminder")         # a task, registered under that name
    @app.task(name="check_orders", echo=True)
    async def check_orders(self: AsyncTask): await self.add_task("send_reminder", 1, "hi")
    app.run_forever()                       # a worker (and the schedules) in this process

`app.config` takes QTasks' settings; `logs_default_level` (and `..._server`) set the level of
the log lines `run_forever` shows. Tasks are sent by name, so any process with the app can send
them (`conveyor send main:app check_orders`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.brokers import Broker, broker_from_url
from conveyor.compat.qtasks.registries import AsyncTask
from conveyor.context import Context, Depends
from conveyor.errors import TaskNotFound
from conveyor.task import Task

__all__ = ["QueueConfig", "QueueTasks", "TaskInfo", "run_options"]


class QueueConfig:
    """QTasks' `app.config`: any setting may be set; conveyor reads the log levels."""

    def __init__(self) -> None:
        self.logs_default_level: int = logging.INFO
        self.logs_default_level_server: int | None = None

    def log_level(self) -> int:
        """The level of the log lines `run_forever` shows."""
        return self.logs_default_level_server or self.logs_default_level


@dataclass
class TaskInfo:
    """What `add_task` returns: the sent task and, when it waited for it, its outcome.

    Attributes:
        uuid: the task id.
        task_name: its name.
        status: "new" when sent without waiting, else conveyor's final status.
        returning: what it returned (with `timeout`).
    """

    uuid: str
    task_name: str
    status: str = "new"
    returning: Any = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


class QueueTasks:
    """The application: a conveyor broker with QTasks' decorator and senders.

    Args:
        name: the application's name (for logs).
        broker_url: a conveyor broker URL; `CONVEYOR_BROKER_URL`, else `sqlite:///conveyor.db`.
        broker: a conveyor broker to use instead.
        **options: QTasks' other arguments (workers, storages, ...): accepted, no effect.
    """

    def __init__(
        self,
        name: str = "QueueTasks",
        broker_url: str | None = None,
        broker: Broker | None = None,
        **options: Any,
    ) -> None:
        self.name = name
        self.broker = broker or broker_from_url(broker_url)
        self.config = QueueConfig()

    def task(
        self,
        name: str | None = None,
        *,
        priority: int | None = None,
        echo: bool = False,
        retry: int | None = None,
        description: str | None = None,
        **labels: Any,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Register a task (`@app.task(name=..., echo=True, retry=3, priority=...)`).

        With `echo=True` the function's first parameter gets the running `AsyncTask`.
        """
        if priority is not None:
            labels["priority"] = priority
        if retry is not None:
            labels["retries"] = retry

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or fn.__name__
            target = _echoed(self, task_name, fn) if echo else fn
            return self.broker.register_task(target, task_name, **labels)

        return register

    async def add_task(
        self,
        task_name: str,
        *positional: Any,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        **named: Any,
    ) -> TaskInfo:
        """Send `task_name` with `positional` and `named` arguments (or QTasks' `args=` tuple and
        `kwargs=` dict); with `timeout`, wait that long for it and return its outcome.

        Raises:
            TaskNotFound: no task of that name is registered here.
            ResultTimeout: with `timeout`, it did not finish in time.
        """
        call_args = [*positional, *(args or ())]
        call_kwargs = {**named, **(kwargs or {})}
        task = self.broker.find_task(task_name)
        kicker_labels = {} if priority is None else {"priority": priority}
        if task is None:
            raise TaskNotFound(f"no task named {task_name!r} in {self.name}")
        handle = await task.kicker().with_labels(**kicker_labels).kiq(*call_args, **call_kwargs)
        info = TaskInfo(handle.task_id, task_name, args=call_args, kwargs=call_kwargs)
        if timeout is not None:
            result = await handle.wait_result(timeout=timeout)
            info.status, info.returning = str(result.status), result.return_value
        return info

    def run_forever(self, **options: Any) -> None:
        """Run a worker and the schedules in this process until SIGINT/SIGTERM (`python
        main.py`); options are `broker.run`'s (`workers`, `max_async_tasks`, ...)."""
        self.broker.run(**run_options(self.config, options))


def run_options(config: QueueConfig, options: dict[str, Any]) -> dict[str, Any]:
    """`broker.run` options for `run_forever`: the config's log level, and the schedules."""
    options.setdefault("log_level", logging.getLevelName(config.log_level()))
    options.setdefault("with_scheduler", True)
    return options


def _echoed(app: QueueTasks, task_name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with its first parameter given the running `AsyncTask` (an injected dependency)."""

    def echo(context: Context) -> AsyncTask:
        return AsyncTask(app, task_name, context)

    parameters = list(inspect.signature(fn).parameters.values())[1:]
    injected = inspect.Parameter(
        "_qtasks_self", inspect.Parameter.KEYWORD_ONLY, default=Depends(echo)
    )
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def call(*args: Any, _qtasks_self: AsyncTask, **kwargs: Any) -> Any:
            return await fn(_qtasks_self, *args, **kwargs)

    else:

        @functools.wraps(fn)
        def call(*args: Any, _qtasks_self: AsyncTask, **kwargs: Any) -> Any:
            return fn(_qtasks_self, *args, **kwargs)

    call.__signature__ = inspect.Signature([*parameters, injected])  # type: ignore[attr-defined]  # read by inspect.signature
    return call
