"""QTasks' `AsyncTask`: what a task declared with `echo=True` gets as its first argument
(`self`), to send other tasks by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.context import Context

if TYPE_CHECKING:
    from conveyor.compat.qtasks.asyncio import QueueTasks, TaskInfo

__all__ = ["AsyncTask"]


class AsyncTask:
    """The running task as QTasks shows it to itself.

    Attributes:
        task_name: its name.
        priority: its priority label, if any.
        ctx: conveyor's `Context` of this run (`ctx.task_id`, `ctx.attempt`, ...).
    """

    def __init__(self, app: QueueTasks, task_name: str, ctx: Context) -> None:
        self._app = app
        self.task_name = task_name
        self.ctx = ctx
        self.priority = ctx.message.labels.get("priority")

    @property
    def task_id(self) -> str:
        """This run's task id."""
        return self.ctx.task_id

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
        """Send the task `task_name` (see `QueueTasks.add_task`)."""
        return await self._app.add_task(
            task_name,
            *positional,
            args=args,
            kwargs=kwargs,
            priority=priority,
            timeout=timeout,
            **named,
        )
