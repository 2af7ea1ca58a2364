"""Celery: `task.apply_async()` single, `group(...).apply_async()` bulk, `pool=solo|threads`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class CeleryAdapter(Adapter):
    """`celery worker` with one process; the threads pool keeps Celery's default concurrency.

    gossip, mingle and heartbeat are off: they only talk to other workers, and mingle alone
    adds a second to every start.
    """

    distribution = "celery"
    async_tasks = False
    bulk_api = "group(...).apply_async()"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "celery"), "-A", "bench.apps.celery_app", "worker",
            "--pool", self.options.get("pool", "solo"),
            "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip

    def worker_settings(self) -> str:
        pool = self.options.get("pool", "solo")
        if pool == "threads":
            return "--pool threads (concurrency: Celery's default, the CPU count)"
        return f"--pool {pool}"

    async def open(self) -> None:
        from bench.apps import celery_app
        from celery import group

        self.group = group
        self.tasks: dict[str, Any] = {"noop": celery_app.noop, "stamp": celery_app.stamp}

    async def send(self, task: str, *args: Any) -> Handle:
        return self.tasks[task].apply_async(args)

    async def send_many(self, task: str, count: int) -> list[Handle]:
        signature = self.tasks[task].s()
        return list(self.group([signature] * count).apply_async().results)

    async def is_done(self, handle: Handle) -> bool:
        return bool(handle.ready())

    async def value(self, handle: Handle) -> Any:
        return handle.get(timeout=5)


ADAPTER = CeleryAdapter
