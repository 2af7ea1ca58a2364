"""Worker counters and recent tasks: published to the broker in batches, read back exactly by the
inspector, by `render_metrics` and by `PrometheusMiddleware`'s HTTP server."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import conveyor.testing
from conveyor import Broker, InMemoryBroker, PrometheusMiddleware, Retry, SqliteBroker
from conveyor.inspector import Inspector
from conveyor.message import TaskMessage
from conveyor.middleware.prometheus import read_metrics, render_metrics
from conveyor.transports.memory import MemoryTransport
from conveyor.worker.stats import WorkerStats
from tests.servers import free_port


def _broker(broker: Broker | None = None) -> Broker:
    broker = broker or InMemoryBroker()

    @broker.task("ok")
    async def ok(x: int) -> int:
        return x

    @broker.task("bad")
    async def bad() -> None:
        raise ValueError("nope")

    @broker.task("again")
    async def again(context: conveyor.Context = conveyor.Depends()) -> int:
        if context.attempt == 1:
            raise Retry(delay=0.01)
        return context.attempt

    return broker


async def _run_some(broker: Broker) -> None:
    async with conveyor.testing.worker(broker):
        handles = [await broker.kiq_by_name("ok", i) for i in range(5)]
        handles += [await broker.kiq_by_name("bad"), await broker.kiq_by_name("again")]
        for handle in handles:
            await handle.wait_result(timeout=5)


async def test_counts_and_recent_tasks_are_exact_after_the_worker_stops(tmp_path: Path) -> None:
    broker = _broker(SqliteBroker(str(tmp_path / "q.db")))
    await _run_some(broker)  # the worker's last flush happens as it stops
    inspector = Inspector(broker)
    counts = await inspector.task_counts()
    assert counts["ok"].counters == {"received": 5, "succeeded": 5}
    assert counts["bad"].counters == {"received": 1, "failed": 1}
    assert counts["again"].counters == {"received": 2, "retried": 1, "succeeded": 1}
    assert sum(counts["ok"].buckets.values()) == 5
    recent, failed = await inspector.recent()
    assert [entry["task_name"] for entry in failed] == ["bad"]
    assert "ValueError: nope" in failed[0]["traceback"]
    assert len(recent) == 7
    assert {entry["status"] for entry in recent} == {"succeeded", "failed"}
    text = render_metrics(await read_metrics(broker)).decode()
    samples = {
        (s.name, s.labels.get("task_name")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("conveyor_tasks_succeeded_total", "ok")] == 5
    assert samples[("conveyor_tasks_retried_total", "again")] == 1
    assert samples[("conveyor_task_duration_seconds_count", "again")] == 2
    await broker.shutdown()


class _FlakyIncr(MemoryTransport):
    """A memory transport whose `incr` fails once, as a broker blip would."""

    failed = False

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        if not self.failed:
            self.failed = True
            raise ConnectionError("blip")
        return await super().incr(key, amount, ttl)


async def test_a_failed_flush_keeps_its_deltas_for_the_next() -> None:
    transport = _FlakyIncr()
    stats = WorkerStats("w")
    for n in range(3):
        stats.started(TaskMessage(task_id=str(n), task_name="t"))
    with pytest.raises(ConnectionError):
        await stats.flush(transport)
    await stats.flush(transport)
    assert await transport.kv_get("stats:received:t") == b"3"
    await stats.flush(transport)  # nothing pending: nothing added twice
    assert await transport.kv_get("stats:received:t") == b"3"


async def test_prometheus_middleware_serves_the_cluster_numbers() -> None:
    port = free_port()
    registry = CollectorRegistry()
    broker = _broker()
    broker.add_middlewares(
        [PrometheusMiddleware(server_port=port, registry=registry, refresh_seconds=0.05)]
    )
    await broker.startup()
    # a second process of the cluster finds the port taken and only skips its server
    other = _broker()
    other.add_middlewares([PrometheusMiddleware(server_port=port, registry=CollectorRegistry())])
    await other.startup()
    await other.shutdown()
    await _run_some(broker)
    deadline = time.monotonic() + 10
    while True:
        body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        if 'conveyor_tasks_succeeded_total{task_name="ok"} 5.0' in body:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    await broker.shutdown()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())
