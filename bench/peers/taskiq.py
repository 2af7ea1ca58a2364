"""taskiq with taskiq-redis: `broker=list` (ListQueueBroker) or `stream` (RedisStreamBroker);
`broker=aio-pika`: taskiq-aio-pika on the shared RabbitMQ; `broker=nats-pull`: taskiq-nats's
pull consumer on the harness's NATS (results in Redis all the same)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers import brokers
from bench.peers.base import Adapter, Handle


class TaskiqAdapter(Adapter):
    """`task.kiq()` single (taskiq has no bulk send), `taskiq worker` CLI, Redis results."""

    distribution = "taskiq"

    def version(self) -> str:
        plugin = {"aio-pika": "taskiq-aio-pika", "nats-pull": "taskiq-nats"}.get(
            self.options.get("broker", ""), "taskiq-redis"
        )
        return f"{super().version()} ({plugin} {_version(plugin)})"

    def env(self) -> dict[str, str]:
        env = {**super().env(), "BENCH_TASKIQ_BROKER": self.options.get("broker", "list")}
        if self.options.get("broker") == "nats-pull":
            env["BENCH_NATS_URL"] = brokers.nats_url()
        return env

    def reset(self) -> None:
        if self.options.get("broker") == "nats-pull":  # on the harness's own nats-server
            brokers.drop_nats("taskiq_")
        super().reset()

    def amqp_names(self) -> tuple[list[str], list[str]] | None:
        if self.options.get("broker") != "aio-pika":
            return None
        name = f"{self.amqp_prefix}_taskiq"
        return [name, f"{name}.dead_letter"], [name]

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "taskiq"), "worker", "bench.apps.taskiq_app:broker",
            "--workers", "1",
            "--max-async-tasks", str(self.counts.concurrency),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def worker_settings(self) -> str:
        return f"--workers 1 --max-async-tasks {self.counts.concurrency}"

    async def open(self) -> None:
        from bench.apps import taskiq_app

        self.app = taskiq_app
        self.tasks: dict[str, Any] = {
            "noop": taskiq_app.noop,
            "sleepy": taskiq_app.sleepy,
            "stamp": taskiq_app.stamp,
        }
        await taskiq_app.broker.startup()

    async def close(self) -> None:
        await self.app.broker.shutdown()

    async def send(self, task: str, *args: Any) -> Handle:
        return await self.tasks[task].kiq(*args)

    async def is_done(self, handle: Handle) -> bool:
        return bool(await handle.is_ready())

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        # One EXISTS per task pipelined on one connection (the backend stores a result under
        # the task id): this check is not timed, it only has to be quick.
        from redis.asyncio import Redis

        backend = self.app.results
        left: list[Handle] = []
        async with Redis(connection_pool=backend.redis_pool) as redis:
            for start in range(0, len(handles), 1000):
                batch = handles[start : start + 1000]
                pipe = redis.pipeline(transaction=False)
                for h in batch:
                    pipe.exists(h.task_id)
                found = await pipe.execute()
                left += [h for h, n in zip(batch, found, strict=True) if not n]
        return left

    async def value(self, handle: Handle) -> Any:
        result = await handle.get_result()
        return result.return_value


def _version(distribution: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(distribution)


ADAPTER = TaskiqAdapter
