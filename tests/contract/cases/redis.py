"""The Redis engine: one key prefix per test, its keys deleted afterwards; a foreign client with
access to the server can XADD any fields to a queue's stream."""

from __future__ import annotations

from pathlib import Path

from conveyor.engines.base import Engine
from tests.contract.cases import EngineCase, test_prefix
from tests.servers import drop_prefix, redis_url


def _url(tmp_path: Path) -> str:
    return f"{redis_url()}?prefix={test_prefix(tmp_path, 'redis')}"


async def _cleanup(tmp_path: Path) -> None:
    if (tmp_path / "redis-prefix").exists():
        drop_prefix(redis_url(), test_prefix(tmp_path, "redis"))


async def _plant(engine: Engine, tmp_path: Path, queue: str) -> str:
    """An entry in the queue's band-0 stream (`P:{Q}:s:0`, see the header of `redis.lua`) with
    its fields in another order, no task id and a delivery count that is not a number."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url())
    try:
        stream = f"{test_prefix(tmp_path, 'redis')}:{{{queue}}}:s:0"
        await client.xadd(stream, {"n": "many", "b": "body", "x": "1"})
    finally:
        await client.aclose()
    return "no task id"


CASE = EngineCase("redis", _url, cleanup=_cleanup, plant=_plant)
