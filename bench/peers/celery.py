"""Celery: `task.apply_async()` single, `group(...).apply_async()` bulk, `pool=solo|threads`;
Redis broker, or `broker=amqp` (py-amqp on the shared RabbitMQ). Results in Redis either way."""

from __future__ import annotations

from collections.abc import Sequence
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

    def amqp_names(self) -> tuple[list[str], list[str]] | None:
        if self.options.get("broker") != "amqp":
            return None
        name = f"{self.amqp_prefix}_celery"  # the queue and its exchange (Celery's default)
        return [name], [name]

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

        self.app = celery_app
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

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        # One MGET per batch through the result backend instead of a GET per task: this
        # check is not timed, it only has to be quick. Only final states are stored here.
        backend = self.app.app.backend
        left: list[Handle] = []
        for start in range(0, len(handles), 1000):
            batch = handles[start : start + 1000]
            stored = backend.mget([backend.get_key_for_task(h.id) for h in batch])
            left += [h for h, data in zip(batch, stored, strict=True) if data is None]
        return left


ADAPTER = CeleryAdapter
