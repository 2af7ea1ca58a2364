"""Procrastinate: `task.defer_async()` single, `task.batch_defer_async()` bulk (one INSERT), the
`procrastinate worker` CLI (LISTEN/NOTIFY on, its default), on the harness's PostgreSQL.

"Stored" is the job's status `succeeded` (Procrastinate keeps finished jobs by default and
stores no return value; `stamp`'s value is read from `bench_stamps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class ProcrastinateAdapter(Adapter):
    """One worker process, `--concurrency` the common async setting."""

    distribution = "procrastinate"
    bulk_api = "task.batch_defer_async"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "procrastinate"), "--app=bench.apps.procrastinate_app.app",
            "--log-level", "warning",
            "worker", "--concurrency", str(self.counts.concurrency),
        ]  # fmt: skip

    def worker_settings(self) -> str:
        return f"--concurrency {self.counts.concurrency} (LISTEN/NOTIFY, psycopg pool of 4)"

    async def open(self) -> None:
        from bench.apps import pg_stamps, procrastinate_app

        self.app = procrastinate_app.app
        self.stamps = pg_stamps
        self.tasks: dict[str, Any] = {
            "noop": procrastinate_app.noop,
            "sleepy": procrastinate_app.sleepy,
            "stamp": procrastinate_app.stamp,
        }
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()
        await pg_stamps.create()

    async def close(self) -> None:
        await self.app.close_async()

    async def send(self, task: str, *args: Any) -> Handle:
        kwargs = {"sent": args[0]} if args else {}
        return await self.tasks[task].defer_async(**kwargs)

    async def send_many(self, task: str, count: int) -> list[Handle]:
        return list(await self.tasks[task].batch_defer_async(*({} for _ in range(count))))

    async def is_done(self, handle: Handle) -> bool:
        return bool(await self.missing([handle]) == [])

    async def value(self, handle: Handle) -> Any:
        return (await self.stamps.read([str(handle)])).get(str(handle))

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        rows = await self.app.connector.execute_query_all_async(
            "SELECT id FROM procrastinate_jobs WHERE id = ANY(%(ids)s) AND status = 'succeeded'",
            ids=list(handles),
        )
        done = {row["id"] for row in rows}
        return [h for h in handles if h not in done]


ADAPTER = ProcrastinateAdapter
