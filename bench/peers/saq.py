"""saq: `queue.enqueue()` single (no bulk API), the `saq` CLI, jobs and results in Redis or, for
saq-postgres, in PostgreSQL (`PostgresQueue`: psycopg, LISTEN/NOTIFY)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class SaqAdapter(Adapter):
    """A finished job stays stored with its result (saq's default ttl, 600 s)."""

    distribution = "saq"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [str(bin_dir / "saq"), "bench.apps.saq_app.settings", "--workers", "1"]

    def worker_settings(self) -> str:
        return f"--workers 1, concurrency={self.counts.concurrency}"

    async def open(self) -> None:
        from bench.apps import saq_app
        from saq.job import Status

        self.queue = saq_app.queue
        self.complete = Status.COMPLETE
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def send(self, task: str, *args: Any) -> Handle:
        kwargs = {"sent": args[0]} if args else {}
        job = await self.queue.enqueue(task, **kwargs)
        return job.key

    async def is_done(self, handle: Handle) -> bool:
        job = await self.queue.job(handle)
        return job is not None and job.status == self.complete

    async def value(self, handle: Handle) -> Any:
        job = await self.queue.job(handle)
        return None if job is None else job.result

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        jobs = await self.queue.jobs(handles)
        return [
            h
            for h, job in zip(handles, jobs, strict=True)
            if job is None or job.status != self.complete
        ]


ADAPTER = SaqAdapter
