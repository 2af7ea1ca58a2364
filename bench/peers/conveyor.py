"""conveyor on any engine `broker_from_url` knows: `engine=redis|sqlite|nats|amqp|postgres`,
`workers=N`.

Redis, PostgreSQL and NATS are the harness's own servers (PostgreSQL: a database made afresh
for each session, conveyor's tables in its default schema). RabbitMQ is the server this machine
runs on 127.0.0.1 (`BENCH_AMQP_URL`). On NATS and RabbitMQ conveyor's names carry a prefix of
this run that `reset` deletes; RabbitMQ keeps conveyor's state and results in the harness's
Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.peers import brokers
from bench.peers.base import Adapter, Handle, Unavailable


class ConveyorAdapter(Adapter):
    """`task.kiq()` single, `broker.kiq_many()` bulk, `conveyor worker` CLI."""

    distribution = "conveyor"
    bulk_api = "broker.kiq_many"

    def url(self) -> str:
        """The broker URL of the configured engine."""
        engine = self.options.get("engine")
        if engine == "postgres":
            return self.server_url
        if engine == "sqlite":
            return f"sqlite:///{self.workdir / 'conveyor.db'}"
        if engine == "nats":
            return f"{brokers.nats_url()}?prefix={self.prefix}"
        if engine == "amqp":
            server = brokers.amqp_url()
            return f"{server}?prefix={self.prefix}&state={quote(self.server_url, safe='')}"
        return self.server_url

    @property
    def prefix(self) -> str:
        """This run's prefix on the shared NATS/RabbitMQ servers (one per harness Redis)."""
        return self.amqp_prefix

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
        engine = self.options.get("engine")
        if engine == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                (self.workdir / f"conveyor.db{suffix}").unlink(missing_ok=True)
            return
        if engine == "nats":
            brokers.drop_nats(f"{self.prefix}_")
        if engine == "amqp":  # before the Redis flush: the state store knows the queues
            brokers.in_thread(lambda: _drop_amqp(self.url()))
        super().reset()

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


async def _drop_amqp(url: str) -> None:
    """Delete the queues and exchanges conveyor declared under the URL's prefix."""
    from conveyor import AmqpBroker

    broker = AmqpBroker(url)
    await broker.startup()
    try:
        await broker.transport.delete_topology()  # type: ignore[attr-defined]
    finally:
        await broker.shutdown()


ADAPTER = ConveyorAdapter
