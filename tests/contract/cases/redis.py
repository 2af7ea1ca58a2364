"""The Redis engine: one key prefix per test, its keys deleted afterwards."""

from __future__ import annotations

from pathlib import Path

from tests.contract.cases import EngineCase, test_prefix
from tests.servers import drop_prefix, redis_url


def _url(tmp_path: Path) -> str:
    return f"{redis_url()}?prefix={test_prefix(tmp_path, 'redis')}"


async def _cleanup(tmp_path: Path) -> None:
    if (tmp_path / "redis-prefix").exists():
        drop_prefix(redis_url(), test_prefix(tmp_path, "redis"))


CASE = EngineCase("redis", _url, cleanup=_cleanup)
