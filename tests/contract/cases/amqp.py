"""The RabbitMQ engine, with a SQLite and with a Redis state store: one queue prefix per test
(its queues are deleted by `delete_topology`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tests.contract.cases import EngineCase, test_prefix
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


SQLITE_STATE = EngineCase("amqp-sqlite", _sqlite_state)
REDIS_STATE = EngineCase("amqp-redis", _redis_state, cleanup=_drop_redis)
