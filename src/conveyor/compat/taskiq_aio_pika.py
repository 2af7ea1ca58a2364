"""`taskiq_aio_pika`'s `AioPikaBroker` on conveyor's RabbitMQ engine: `from taskiq_aio_pika
import AioPikaBroker` becomes `from conveyor.compat.taskiq_aio_pika import AioPikaBroker`.

RabbitMQ keeps the messages; conveyor keeps its shared state (rate limits, schedules, workflow
claims) and by default the results in the store `state_url` names (Redis or SQLite), else in
each process's memory: see docs/engines/amqp.md. `queue_name` becomes the prefix of conveyor's
queues and exchanges; a `delay` label delays a message, as Taskiq's delayed exchange does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import brokers
from conveyor.compat._plugins import name_part
from conveyor.compat.taskiq._broker import AsyncBroker
from conveyor.engines.base import ResultBackend

__all__ = ["AioPikaBroker"]


class AioPikaBroker(AsyncBroker, brokers.AmqpBroker):
    """Taskiq's RabbitMQ broker: conveyor's `AmqpBroker` on `url`.

    Args:
        url: `amqp://user:password@host:5672/vhost`.
        result_backend: where results go.
        task_id_generator: makes task ids.
        queue_name: the prefix of conveyor's queues and exchanges.
        state_url: conveyor's shared state (`redis://...`, `sqlite:///state.db`).
        **options: Taskiq's exchange, queue, QoS and priority options: accepted, no effect
            (conveyor declares its own priority queues and a dead-letter queue).
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        result_backend: ResultBackend | None = None,
        task_id_generator: Callable[[], str] | None = None,
        *,
        queue_name: str = "taskiq",
        state_url: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            url,
            prefix=name_part(queue_name),
            state_url=state_url,
            result_backend=result_backend,
            task_id_generator=task_id_generator,
        )
