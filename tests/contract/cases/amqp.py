"""The RabbitMQ engine, with a SQLite and with a Redis state store: one queue prefix per test
(its queues are deleted by `delete_topology`). A foreign client publishing into a work queue is
the malformed entry: one with a text `x-eta-ms` header (SQLite case) or `x-n` header (Redis).
(aio-pika gives every message a message_id, so a message without one is not planted here.)"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aio_pika

from conveyor.engines.base import Engine
from tests.contract.cases import EngineCase, Planter, test_prefix
from tests.servers import amqp_url, drop_prefix, redis_url


def _url(tmp_path: Path) -> str:
    return f"{amqp_url()}?prefix={test_prefix(tmp_path, 'amqp')}"


def _sqlite_state(tmp_path: Path) -> str:
    state = f"sqlite:///{tmp_path}/amqp-state.db"
    return f"{_url(tmp_path)}&state={quote(state, safe='')}"


def _redis_state(tmp_path: Path) -> str:
    state = f"{redis_url()}?prefix={test_prefix(tmp_path, 'redis')}"
    return f"{_url(tmp_path)}&state={quote(state, safe='')}"


async def _drop_redis(tmp_path: Path) -> None:
    if (tmp_path / "redis-prefix").exists():
        drop_prefix(redis_url(), test_prefix(tmp_path, "redis"))


def _planter(message: aio_pika.Message, word: str) -> Planter:
    """Publish `message` into the work queue as another client would; `word` is in its problem."""

    async def plant(engine: Engine, tmp_path: Path, queue: str) -> str:
        connection = await aio_pika.connect(amqp_url())
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            routing_key = f"{test_prefix(tmp_path, 'amqp')}.{queue}"  # declared by a publish
            await channel.default_exchange.publish(message, routing_key, mandatory=True)
        return word

    return plant


SQLITE_STATE = EngineCase(
    "amqp-sqlite",
    _sqlite_state,
    plant=_planter(aio_pika.Message(b"{}", headers={"x-eta-ms": "soon"}), "x-eta-ms"),
)
REDIS_STATE = EngineCase(
    "amqp-redis",
    _redis_state,
    cleanup=_drop_redis,
    plant=_planter(aio_pika.Message(b"{}", headers={"x-n": "two"}), "x-n"),
)
