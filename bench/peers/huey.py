"""Huey: calling the task enqueues it, `huey.enqueue(group(...))` bulk, `huey_consumer` CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class HueyAdapter(Adapter):
    """One consumer process with Huey's default one worker thread; BRPOP (blocking) reads."""

    distribution = "huey"
    async_tasks = False
    bulk_api = "huey.enqueue(group(...))"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "huey_consumer"), "bench.apps.huey_app.huey",
            "--workers", "1", "--worker-type", "thread", "--quiet",
        ]  # fmt: skip

    def worker_settings(self) -> str:
        return "--workers 1 --worker-type thread (Huey's defaults)"

    async def open(self) -> None:
        from bench.apps import huey_app
        from huey.api import group

        self.app = huey_app
        self.group = group
        self.tasks: dict[str, Any] = {"noop": huey_app.noop, "stamp": huey_app.stamp}

    async def send(self, task: str, *args: Any) -> Handle:
        return self.tasks[task](*args)

    async def send_many(self, task: str, count: int) -> list[Handle]:
        signatures = [self.tasks[task].s() for _ in range(count)]
        return list(self.app.huey.enqueue(self.group(signatures)))

    async def is_done(self, handle: Handle) -> bool:
        return handle.get(preserve=True) is not None

    async def value(self, handle: Handle) -> Any:
        return handle.get(preserve=True)

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        # One HMGET per batch on the results hash instead of an HGET per task: this check is
        # not timed, it only has to be quick.
        storage = self.app.huey.storage
        left: list[Handle] = []
        for start in range(0, len(handles), 1000):
            batch = handles[start : start + 1000]
            stored = storage.conn.hmget(storage.result_key, [h.id for h in batch])
            left += [h for h, data in zip(batch, stored, strict=True) if data is None]
        return left


ADAPTER = HueyAdapter
