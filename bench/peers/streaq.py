"""streaq: `task.enqueue()` single, `worker.enqueue_many()` bulk, results in Redis (5 min)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class StreaqAdapter(Adapter):
    """The worker runs through `Worker.run_sync()`, what `streaq run` calls (see the app)."""

    distribution = "streaq"
    bulk_api = "worker.enqueue_many"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [str(bin_dir / "python"), "-m", "bench.apps.streaq_app"]

    def worker_settings(self) -> str:
        return f"concurrency={self.counts.concurrency} (prefetch: streaq's default)"

    async def open(self) -> None:
        from bench.apps import streaq_app
        from streaq.task import TaskStatus

        self.app = streaq_app
        self.done = TaskStatus.DONE
        self.tasks: dict[str, Any] = {
            "noop": streaq_app.noop,
            "sleepy": streaq_app.sleepy,
            "stamp": streaq_app.stamp,
        }
        self.stack = AsyncExitStack()
        await self.stack.enter_async_context(streaq_app.worker)

    async def close(self) -> None:
        await self.stack.aclose()

    async def send(self, task: str, *args: Any) -> Handle:
        return await self.tasks[task].enqueue(*args)

    async def send_many(self, task: str, count: int) -> list[Handle]:
        tasks = [self.tasks[task].enqueue() for _ in range(count)]
        await self.app.worker.enqueue_many(tasks)
        return tasks

    async def is_done(self, handle: Handle) -> bool:
        return bool(await handle.status() == self.done)

    async def value(self, handle: Handle) -> Any:
        # `task.result()` subscribes to a channel before reading (about 0.1 s per task): the
        # stored result is read directly instead. Not timed: latency is measured by the task.
        worker = self.app.worker
        raw = await worker.redis.get(worker.results_key + handle.id)
        data = await worker.deserialize(raw)
        return data["r"]


ADAPTER = StreaqAdapter
