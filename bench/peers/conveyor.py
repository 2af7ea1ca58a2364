"""conveyor on any engine `broker_from_url` knows: `engine=redis|sqlite`, `workers=N`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle, Unavailable


class ConveyorAdapter(Adapter):
    """`task.kiq()` single, `broker.kiq_many()` bulk, `conveyor worker` CLI."""

    distribution = "conveyor"
    bulk_api = "broker.kiq_many"

    def url(self) -> str:
        """The broker URL of the configured engine."""
        if self.options.get("engine") == "sqlite":
            return f"sqlite:///{self.workdir / 'conveyor.db'}"
        return self.redis_url

    def env(self) -> dict[str, str]:
        return {**super().env(), "BENCH_CONVEYOR_URL": self.url()}

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "conveyor"), "worker", "bench.apps.conveyor_app:broker",
            "--workers", self.options.get("workers", "1"),
            "--max-async-tasks", str(self.counts.concurrency),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def worker_settings(self) -> str:
        workers = self.options.get("workers", "1")
        return f"--workers {workers} --max-async-tasks {self.counts.concurrency}"

    def reset(self) -> None:
        if self.options.get("engine") != "sqlite":
            super().reset()
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            (self.workdir / f"conveyor.db{suffix}").unlink(missing_ok=True)

    async def open(self) -> None:
        from conveyor.errors import ConfigurationError

        try:
            from bench.apps import conveyor_app
        except ConfigurationError as exc:  # the engine does not exist (yet)
            raise Unavailable(str(exc)) from None
        except ImportError as exc:  # e.g. redis-py missing for the Redis engine
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        self.app = conveyor_app
        self.tasks: dict[str, Any] = {
            "noop": conveyor_app.noop,
            "sleepy": conveyor_app.sleepy,
            "stamp": conveyor_app.stamp,
        }
        await conveyor_app.broker.startup()

    async def close(self) -> None:
        await self.app.broker.shutdown()

    async def send(self, task: str, *args: Any) -> Handle:
        return await self.tasks[task].kiq(*args)

    async def send_many(self, task: str, count: int) -> list[Handle]:
        signature = self.tasks[task].s()
        return await self.app.broker.kiq_many([signature] * count)

    async def is_done(self, handle: Handle) -> bool:
        return bool(await handle.is_ready())

    async def value(self, handle: Handle) -> Any:
        result = await handle.get_result()
        return None if result is None else result.return_value


ADAPTER = ConveyorAdapter
