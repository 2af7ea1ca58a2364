"""PgQueuer: `Queries.enqueue(name, payload)` single, `Queries.enqueue([...], [...], [...])` bulk
(one INSERT), its worker (`pgqueuer.run`, as `pgq run` does: see `bench.apps.pgqueuer_app`;
LISTEN/NOTIFY), on asyncpg and the harness's PostgreSQL.

"Stored" is the job's `successful` row in `pgqueuer_log` (PgQueuer stores no return value;
`stamp`'s value is read from `bench_stamps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class PgqueuerAdapter(Adapter):
    """One worker process: `max_concurrent_tasks` the common setting, PgQueuer's default batch
    size (10 jobs per dequeue)."""

    distribution = "pgqueuer"
    bulk_api = "Queries.enqueue(lists)"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [str(bin_dir / "python"), "-m", "bench.apps.pgqueuer_app"]

    def worker_settings(self) -> str:
        return f"--max-concurrent-tasks {self.counts.concurrency} (batch size 10, its default)"

    async def open(self) -> None:
        import asyncpg
        from bench.apps import pg_stamps
        from pgqueuer import AsyncpgDriver, Queries

        self.stamps = pg_stamps
        self.connection = await asyncpg.connect(self.server_url)
        self.queries = Queries(AsyncpgDriver(self.connection))
        await self.queries.install()
        await pg_stamps.create()

    async def close(self) -> None:
        await self.connection.close()

    async def send(self, task: str, *args: Any) -> Handle:
        payload = repr(args[0]).encode() if args else None
        ids = await self.queries.enqueue(task, payload)
        return ids[0]

    async def send_many(self, task: str, count: int) -> list[Handle]:
        return list(await self.queries.enqueue([task] * count, [None] * count, [0] * count))

    async def is_done(self, handle: Handle) -> bool:
        return bool(await self.missing([handle]) == [])

    async def value(self, handle: Handle) -> Any:
        return (await self.stamps.read([str(handle)])).get(str(handle))

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        rows = await self.connection.fetch(
            "SELECT job_id FROM pgqueuer_log WHERE job_id = ANY($1) AND status = 'successful'",
            list(handles),
        )
        done = {row["job_id"] for row in rows}
        return [h for h in handles if h not in done]


ADAPTER = PgqueuerAdapter
