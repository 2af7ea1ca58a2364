"""The NATS JetStream engine: one stream prefix per test, its streams deleted afterwards."""

from __future__ import annotations

from pathlib import Path

from tests.contract.cases import EngineCase, test_prefix
from tests.servers import drop_nats_prefix, nats_url


def _url(tmp_path: Path) -> str:
    return f"{nats_url()}?prefix={test_prefix(tmp_path, 'nats')}"


async def _cleanup(tmp_path: Path) -> None:
    if (tmp_path / "nats-prefix").exists():
        await drop_nats_prefix(nats_url(), test_prefix(tmp_path, "nats"))


CASE = EngineCase("nats", _url, cleanup=_cleanup)
