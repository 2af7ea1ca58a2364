"""arq: `pool.enqueue_job()` single (no bulk API), the `arq` CLI, results in Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class ArqAdapter(Adapter):
    """arq's worker polls its queue every `poll_delay` (0.5 s by default, kept)."""

    distribution = "arq"

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "arq"), "bench.apps.arq_app.WorkerSettings",
            "--custom-log-dict", "bench.apps.arq_app.LOG_CONFIG",
        ]  # fmt: skip

    def worker_settings(self) -> str:
        return f"max_jobs={self.counts.concurrency}, poll_delay=0.5 s (default)"

    async def open(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.pool = await create_pool(RedisSettings.from_dsn(self.server_url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def send(self, task: str, *args: Any) -> Handle:
        return await self.pool.enqueue_job(task, *args)

    async def is_done(self, handle: Handle) -> bool:
        return await handle.result_info() is not None

    async def value(self, handle: Handle) -> Any:
        info = await handle.result_info()
        return info.result


ADAPTER = ArqAdapter
