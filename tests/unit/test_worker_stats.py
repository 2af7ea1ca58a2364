"""Worker counters and recent tasks: published to the broker in batches, read back exactly by the
inspector, by `render_metrics` and by `PrometheusMiddleware`'s HTTP server; bounded against
unknown task names, runs that never end and large labels."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import conveyor.testing
from conveyor import Broker, InMemoryBroker, PrometheusMiddleware, Retry, SqliteBroker
from conveyor.engines.memory import MemoryStore
from conveyor.errors import TaskNotFound
from conveyor.inspector import Inspector
from conveyor.message import TaskMessage
from conveyor.prometheus import read_metrics, render_metrics
from conveyor.result import TaskResult, TaskStatus
from conveyor.state import State
from conveyor.worker.outcome import Outcome, build_result, failed_result
from conveyor.worker.stats import UNKNOWN_TASK, WorkerStats
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


class _FlakyIncr(MemoryStore):
    """A memory store whose `incr` fails once, as a broker blip would."""

    failed = False

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        if not self.failed:
            self.failed = True
            raise ConnectionError("blip")
        return await super().incr(key, amount, ttl)


async def test_a_failed_flush_keeps_its_deltas_for_the_next() -> None:
    store = _FlakyIncr()
    stats = WorkerStats("w")
    for n in range(3):
        stats.started(TaskMessage(task_id=str(n), task_name="t"))
    with pytest.raises(ConnectionError):
        await stats.flush(State(store))
    await stats.flush(State(store))
    assert await store.get("stats:received:t") == b"3"
    await stats.flush(State(store))  # nothing pending: nothing added twice
    assert await store.get("stats:received:t") == b"3"


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


def _failed(message: TaskMessage) -> TaskResult[Any]:
    return failed_result(message, TaskNotFound("unknown"), Outcome())


async def test_unknown_task_names_are_counted_under_one_name() -> None:
    store = MemoryStore()
    stats = WorkerStats("w")
    for n in range(3):  # a foreign producer's names: never started, failed at once
        junk = TaskMessage(task_id=str(n), task_name=f"junk-{n}" + "x" * 500)
        stats.ended(junk, _failed(junk))
    await stats.flush(State(store))
    keys = await store.scan("stats:")
    assert {key for key in keys if "junk" in key} == set()
    assert await store.get(f"stats:failed:{UNKNOWN_TASK}") == b"3"
    recent = json.loads(stats.recent_json())["recent"]
    assert [len(entry["task_name"]) for entry in recent] == [200] * 3  # shown, but cut


def test_a_run_that_never_ended_leaves_the_running_list() -> None:
    stats = WorkerStats("w")
    lost, kept = (TaskMessage(task_id=n, task_name="t") for n in ("lost", "kept"))
    stats.started(lost)  # the worker raised or handed it back before `ended`
    stats.started(kept)
    stats.ended(kept, build_result(kept, TaskStatus.SUCCEEDED, Outcome()))
    for message in (lost, kept):
        stats.done(message.task_id)
    shown = json.loads(stats.recent_json())["recent"]
    assert [(entry["task_id"], entry["status"]) for entry in shown] == [("kept", "succeeded")]
    assert stats.totals["received"] == 2


def test_recent_entries_leave_out_the_workflow_and_cut_long_labels() -> None:
    stats = WorkerStats("w")
    step = TaskMessage(
        task_id="a", task_name="t", labels={"queue": "q", "workflow": {"k": ["x"] * 1000}}
    )
    big = TaskMessage(task_id="b", task_name="t", labels={"note": "y" * 5000})
    for message in (step, big):
        stats.started(message)
        stats.ended(message, _failed(message))
    first, second = json.loads(stats.recent_json())["recent"]
    assert first["labels"] == {"queue": "q"}
    assert second["labels"] == {}
    assert len(second["labels_text"]) <= 2003
    assert len(stats.recent_json()) < 12_000
