"""The NATS JetStream engine: one stream prefix per test, its streams deleted afterwards; a
foreign client with access to the server can publish anything to a queue's subject."""

from __future__ import annotations

from pathlib import Path

from conveyor.engines.base import Engine
from tests.contract.cases import EngineCase, test_prefix
from tests.servers import drop_nats_prefix, nats_url


def _url(tmp_path: Path) -> str:
    return f"{nats_url()}?prefix={test_prefix(tmp_path, 'nats')}"


async def _cleanup(tmp_path: Path) -> None:
    if (tmp_path / "nats-prefix").exists():
        await drop_nats_prefix(nats_url(), test_prefix(tmp_path, "nats"))


async def _plant(engine: Engine, tmp_path: Path, queue: str) -> str:
    """A message on the queue's band 0 whose task id token (`=ZZ`) `escape` cannot have made:
    the subject `P.w.Q.0.=ZZ` of the stream `P_work` (see `conveyor.engines.nats.queues`),
    stored by JetStream as any client's publish is."""
    import nats

    nc = await nats.connect(nats_url(), connect_timeout=3, max_reconnect_attempts=1)
    try:
        await nc.jetstream().publish(f"{test_prefix(tmp_path, 'nats')}.w.{queue}.0.=ZZ", b"foreign")
    finally:
        await nc.close()
    return "escaped"


CASE = EngineCase("nats", _url, cleanup=_cleanup, plant=_plant)
