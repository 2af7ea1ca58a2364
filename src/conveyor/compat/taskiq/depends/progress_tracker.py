"""`ProgressTracker`: a dependency that reports a task's progress as a state and its detail,
which the handle's `get_progress()` returns as a `TaskProgress` (Taskiq's
`taskiq.depends.progress_tracker`). It stores through conveyor's `Context.set_progress`."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from conveyor.compat.taskiq._result import TaskProgress, TaskState
from conveyor.context import Context, Depends

__all__ = ["ProgressTracker", "TaskProgress", "TaskState"]

T = TypeVar("T")


class ProgressTracker(Generic[T]):
    """Ask for it with `progress: ProgressTracker[dict] = TaskiqDepends()`."""

    def __init__(self, context: Annotated[Context, Depends()]) -> None:
        self.context = context

    async def set_progress(
        self, state: TaskProgress[T] | TaskState | str, meta: T | None = None
    ) -> None:
        """Report `state` (or a whole `TaskProgress`) with `meta`."""
        progress = state if isinstance(state, TaskProgress) else TaskProgress(state, meta)
        await self.context.set_progress(progress.to_value())

    async def get_progress(self) -> TaskProgress[Any] | None:
        """The last report of this task, or None."""
        value = await self.context.broker.get_progress(self.context.task_id)
        found = TaskProgress.from_value(value)
        return found if isinstance(found, TaskProgress) else None
