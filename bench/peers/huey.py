"""Huey: calling the task enqueues it, `huey.enqueue(group(...))` bulk, `huey_consumer` CLI.

`storage=sqlite` (the SQLite group): `SqliteHuey` on a file of the session's scratch directory,
which its consumer polls (Huey's defaults: 0.1 s after an empty read, growing 1.15x to 10 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class HueyAdapter(Adapter):
    """One consumer process with Huey's default one worker thread; BRPOP (blocking) reads on
    Redis, polling on SQLite."""

    SQLITE_FILE = "huey.db"

    @property
    def on_sqlite(self) -> bool:
        """True for `SqliteHuey` (option `storage=sqlite`)."""
        return self.options.get("storage") == "sqlite"

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.on_sqlite:
            env["BENCH_HUEY_SQLITE"] = str(self.workdir / self.SQLITE_FILE)
        return env

    def reset(self) -> None:
        if self.on_sqlite:
            for suffix in ("", "-wal", "-shm", "-journal"):
                (self.workdir / f"{self.SQLITE_FILE}{suffix}").unlink(missing_ok=True)
            return
        super().reset()

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
        if self.on_sqlite:
            return await super().missing(handles)
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
