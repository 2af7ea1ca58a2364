"""Dramatiq: `actor.send()` single, `group(...).run()` bulk, the `dramatiq` CLI; Redis broker,
or `broker=rabbitmq` (RabbitmqBroker on the shared RabbitMQ). Results in Redis either way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.base import Adapter, Handle


class DramatiqAdapter(Adapter):
    """One worker process with Dramatiq's default 8 threads; results via `Results`."""

    distribution = "dramatiq"
    async_tasks = False
    bulk_api = "group(...).run()"

    def amqp_names(self) -> tuple[list[str], list[str]] | None:
        if self.options.get("broker") != "rabbitmq":
            return None
        name = f"{self.amqp_prefix}_dramatiq"  # Dramatiq's delay and dead-letter queues too
        return [name, f"{name}.DQ", f"{name}.XQ"], []

    def worker_argv(self, bin_dir: Path) -> list[str]:
        return [str(bin_dir / "dramatiq"), "bench.apps.dramatiq_app", "--processes", "1"]

    def worker_settings(self) -> str:
        return "--processes 1 (threads: Dramatiq's default, 8)"

    async def open(self) -> None:
        from bench.apps import dramatiq_app
        from dramatiq import group
        from dramatiq.results import ResultMissing

        self.app = dramatiq_app
        self.group = group
        self.result_missing = ResultMissing
        self.tasks: dict[str, Any] = {"noop": dramatiq_app.noop, "stamp": dramatiq_app.stamp}

    async def close(self) -> None:
        self.app.broker.close()

    async def send(self, task: str, *args: Any) -> Handle:
        return self.tasks[task].send(*args)

    async def send_many(self, task: str, count: int) -> list[Handle]:
        messages = [self.tasks[task].message() for _ in range(count)]
        self.group(messages).run()
        return messages

    async def is_done(self, handle: Handle) -> bool:
        try:
            handle.get_result(backend=self.app.backend)
        except self.result_missing:
            return False
        return True

    async def value(self, handle: Handle) -> Any:
        return handle.get_result(backend=self.app.backend)

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        # Pipelined EXISTS on the result keys instead of a read per message: this check is
        # not timed, it only has to be quick.
        backend = self.app.backend
        left: list[Handle] = []
        for start in range(0, len(handles), 1000):
            batch = handles[start : start + 1000]
            with backend.client.pipeline(transaction=False) as pipe:
                for message in batch:
                    pipe.exists(backend.build_message_key(message))
                found = pipe.execute()
            left += [h for h, n in zip(batch, found, strict=True) if not n]
        return left


ADAPTER = DramatiqAdapter
