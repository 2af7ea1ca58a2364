"""streaq: `task.enqueue()` single, `worker.enqueue_many()` bulk, results in Redis (5 min)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.peers.base import CHECK_BATCH, Adapter, Handle


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

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        # EXISTS on the result key instead of `status()` (a six-command transaction): this
        # check is not timed, it only has to be quick.
        worker = self.app.worker
        left: list[Handle] = []
        for start in range(0, len(handles), CHECK_BATCH):
            batch = handles[start : start + CHECK_BATCH]
            found = await asyncio.gather(
                *(worker.redis.exists([worker.results_key + h.id]) for h in batch)
            )
            left += [h for h, n in zip(batch, found, strict=True) if not n]
        return left

    async def value(self, handle: Handle) -> Any:
        # `task.result()` subscribes to a channel before reading (about 0.1 s per task): the
        # stored result is read directly instead. Not timed: latency is measured by the task.
        worker = self.app.worker
        raw = await worker.redis.get(worker.results_key + handle.id)
        data = await worker.deserialize(raw)
        return data["r"]


ADAPTER = StreaqAdapter
