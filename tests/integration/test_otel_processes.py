"""One trace from a web request to a task and its children, across a real worker process on
SQLite and Redis (`OpenTelemetryMiddleware` with the OpenTelemetry SDK).

The test's process is the producer: its spans go to an `InMemorySpanExporter`. The worker is a
`conveyor worker` process whose SDK writes its spans to files (`otel_app_template.py`), read
back here. The web request is an in-process FastAPI app called through httpx's ASGI transport,
its request span made by FastAPI's own OpenTelemetry support.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor import chord, group
from tests.integration.flows import ENGINES, flow_app
from tests.integration.test_worker_processes import eventually

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

TEMPLATE = Path(__file__).with_name("otel_app_template.py")

Span = dict[str, Any]


@dataclass
class Traced:
    """The app, the spans of the test's process and those the workers wrote."""

    app: App
    spans_dir: Path
    exporter: InMemorySpanExporter

    @property
    def module(self) -> Any:
        return self.app.module

    def here(self) -> list[Span]:
        return [self.module.record(span) for span in self.exporter.get_finished_spans()]

    def worker(self) -> list[Span]:
        lines = [line for f in self.spans_dir.glob("*.jsonl") for line in f.read_text().split("\n")]
        return [json.loads(line) for line in lines if line]

    def runs(self, task_id: str) -> list[Span]:
        """The workers' run spans of `task_id`, by attempt."""
        found = [s for s in self.worker() if _id(s) == task_id and s["kind"] == "CONSUMER"]
        return sorted(found, key=lambda s: int(s["attributes"]["conveyor.task.attempt"]))


def _id(span: Span) -> Any:
    return span["attributes"].get("messaging.message.id")


def one(spans: list[Span], **wanted: Any) -> Span:
    """The one span whose fields (or message id, `task_id=`) are `wanted`."""
    task_id = wanted.pop("task_id", None)
    found = [
        s
        for s in spans
        if all(s[k] == v for k, v in wanted.items()) and (task_id is None or _id(s) == task_id)
    ]
    assert len(found) == 1, (wanted, task_id, spans)
    return found[0]


@contextlib.asynccontextmanager
async def traced_app(
    engine: str, root: Path, monkeypatch: pytest.MonkeyPatch, workers: Workers, link: bool = False
) -> AsyncIterator[Traced]:
    """The traced app, and its `workers` stopped before it goes: a live worker would write
    the app's keys again after they are dropped from the shared Redis."""
    async with flow_app(engine, root, monkeypatch, template=TEMPLATE) as app:
        exporter = InMemorySpanExporter()
        app.module.provider.add_span_processor(SimpleSpanProcessor(exporter))
        spans_dir = root / "spans"
        spans_dir.mkdir()
        monkeypatch.setenv("CONVEYOR_TEST_SPANS", str(spans_dir))  # read by the workers only
        monkeypatch.setenv("CONVEYOR_TEST_OTEL_LINK", "1" if link else "0")
        try:
            yield Traced(app, spans_dir, exporter)
        finally:
            workers.stop_all()


@pytest.mark.parametrize("engine", ENGINES)
async def test_one_trace_from_a_request_to_the_task_its_retries_and_a_chord(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: Workers
) -> None:
    async with traced_app(engine, tmp_path, monkeypatch, workers) as t:
        m = t.module
        worker = workers.start(t.app, "--log-format", "json")
        tracer = m.provider.get_tracer("test")
        api = FastAPI(telemetry={"tracer_provider": m.provider})  # its own request spans

        @api.post("/add")
        async def post_add() -> dict[str, str]:
            return {"task_id": (await m.add.kiq(2, 3)).task_id}

        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            task_id = (await client.post("/add")).json()["task_id"]
        flaky = await m.flaky.kiq()
        with tracer.start_as_current_span("workflow"):
            flow = await chord(group(m.add.s(i, i) for i in range(3)), m.total.s()).kiq()
        assert (await t.app.broker.get_handle(task_id).wait_result(timeout=20)).return_value == 5
        assert (await flaky.wait_result(timeout=20)).return_value == 3
        assert (await flow.wait_result(timeout=20)).return_value == 6
        # 1 + 3 attempts + 3 members + the callback's run, and the callback's send
        await eventually(lambda: len(t.worker()) >= 9, 10, "the worker's spans written")
        here, there = t.here(), t.worker()

        # the request span is the root; the send span its child; the run span the send's
        request = one(here, name="POST /add")
        assert request["parent_id"] is None
        assert request["kind"] == "SERVER"
        endpoint = one(here, name="fastapi.endpoint")
        send = one(here, kind="PRODUCER", task_id=task_id)
        run = one(there, kind="CONSUMER", task_id=task_id)
        assert endpoint["parent_id"] == request["span_id"]
        assert send["parent_id"] == endpoint["span_id"]
        assert run["parent_id"] == send["span_id"]
        assert request["trace_id"] == send["trace_id"] == run["trace_id"]
        assert send["name"] == run["name"].replace("process", "send") == "send default"
        assert (
            run["attributes"]
            | {
                "messaging.system": "conveyor",
                "messaging.operation.type": "process",
                "messaging.destination.name": "default",
                "conveyor.task.name": f"{t.app.name}:add",
                "conveyor.task.attempt": 1,
                "conveyor.task.outcome": "succeeded",
                "conveyor.engine": engine,
            }
            == run["attributes"]
        )

        # the worker's log line of that run carries the run span's ids
        logged = [json.loads(line) for line in worker.stderr().splitlines() if line.startswith("{")]
        ended = next(
            r for r in logged if r.get("task_id") == task_id and "succeeded" in r["message"]
        )
        assert (ended["trace_id"], ended["span_id"]) == (run["trace_id"], run["span_id"])

        # each attempt of the retried task is a run span under the one send span
        flaky_send = one(here, kind="PRODUCER", task_id=flaky.task_id)
        attempts = t.runs(flaky.task_id)
        assert [s["attributes"]["conveyor.task.attempt"] for s in attempts] == [1, 2, 3]
        assert {s["parent_id"] for s in attempts} == {flaky_send["span_id"]}
        assert [s["status"] for s in attempts] == ["ERROR", "ERROR", "UNSET"]
        assert [s["attributes"]["conveyor.task.outcome"] for s in attempts] == [
            "retrying",
            "retrying",
            "succeeded",
        ]
        assert all({"conveyor.task.retry", "exception"} <= set(s["events"]) for s in attempts[:2])

        # the chord is one trace: members under their sends, the callback sent from a member
        root = one(here, name="workflow")
        members = [one(there, kind="CONSUMER", task_id=f"{flow.task_id}-w.0.{i}") for i in range(3)]
        for member in members:
            member_send = one(
                here, kind="PRODUCER", task_id=member["attributes"]["messaging.message.id"]
            )
            assert member_send["parent_id"] == root["span_id"]
            assert member["parent_id"] == member_send["span_id"]
        callback_send = one(there, kind="PRODUCER", task_id=f"{flow.task_id}-w.1")
        callback = one(there, kind="CONSUMER", task_id=f"{flow.task_id}-w.1")
        assert callback_send["parent_id"] in {member["span_id"] for member in members}
        assert callback["parent_id"] == callback_send["span_id"]
        steps = [*members, callback_send, callback]
        assert {s["trace_id"] for s in steps} == {root["trace_id"]}
        assert {s["attributes"]["messaging.message.conversation_id"] for s in steps} == {
            flow.task_id
        }


async def test_link_starts_a_trace_per_run_linked_to_its_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: Workers
) -> None:
    async with traced_app("sqlite", tmp_path, monkeypatch, workers, link=True) as t:
        workers.start(t.app)
        with t.module.provider.get_tracer("test").start_as_current_span("request"):
            handle = await t.module.add.kiq(1, 2)
        assert (await handle.wait_result(timeout=20)).return_value == 3
        await eventually(lambda: bool(t.runs(handle.task_id)), 10, "the run's span written")
        send = one(t.here(), kind="PRODUCER", task_id=handle.task_id)
        (run,) = t.runs(handle.task_id)
        assert run["parent_id"] is None
        assert run["trace_id"] != send["trace_id"]
        assert run["links"] == [f"{send['trace_id']}:{send['span_id']}"]
