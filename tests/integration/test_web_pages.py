"""The dashboard's task and worker pages, its filters and its stored history, over HTTP against a
real `conveyor web` and a real worker process: what a page shows of a retried, a failed, a
running and a workflow task; filters by name, state and queue; a history that outlives a restart
of the web process and ignores what the app did not sign."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

import conveyor
from conveyor.history import History, Point
from conveyor.serializers import Signer
from tests.integration.conftest import App, Workers
from tests.integration.webserver import WebServer, serve, start_web, until

pytestmark = pytest.mark.slow


@pytest.fixture
def web(app: App) -> Iterator[WebServer]:
    yield from serve(app)


async def _page(client: httpx.AsyncClient, task_id: str, ready: Callable[[Any], bool]) -> Any:
    """The task page of `task_id` once `ready(page)` holds."""
    found: dict[str, Any] = {}

    async def shown() -> bool:
        answer = await client.get(f"/api/tasks/{task_id}")
        found.update(page=answer.json() if answer.status_code == 200 else None)
        return found["page"] is not None and bool(ready(found["page"]))

    await until(shown)
    return found["page"]


async def test_task_and_worker_pages_and_filters(
    app: App, workers: Workers, web: WebServer
) -> None:
    worker = workers.start(app)
    flaky = await (await app.module.flaky.kiq(1)).wait_result(timeout=15)
    boom = await app.module.boom.kiq()
    report = await app.module.report.kiq()
    flow = await conveyor.chain(app.module.add.s(1, 2), app.module.add.s(3)).kiq()
    async with web.client() as client:
        # a retried task: its call, its result, and a row per attempt, the first one's error
        page = await _page(client, flaky.task_id, lambda p: len(p["attempts"]) == 2)
        assert (page["task_name"], page["status"]) == (f"{app.name}:flaky", "succeeded")
        assert page["call"]["args"] == [1]
        assert page["result"]["return_value"] == {"value": 2}
        first, second = page["attempts"]
        assert (first["attempt"], first["status"], second["status"]) == (1, "retrying", "succeeded")
        assert first["error"] == "ConnectionError: attempt 1 failed"
        assert "raise ConnectionError" in first["traceback"]

        # a failed task: its error, traceback and dead letter
        page = await _page(client, boom.task_id, lambda p: p["attempts"] and p["dead_letter"])
        assert page["result"]["error"] == "ValueError: boom"
        assert 'raise ValueError("boom")' in page["result"]["traceback"]
        assert page["dead_letter"]["reason"] == "ValueError: boom"

        # a running task: its progress on its page and in its row of the snapshot
        page = await _page(client, report.task_id, lambda p: p["progress"] is not None)
        assert (page["status"], page["progress"]) == ("running", {"value": {"done": 1, "total": 2}})
        rows: list[dict[str, Any]] = []
        snapshot: dict[str, Any] = {}

        async def row_shown() -> bool:  # the worker publishes its recent tasks once a second
            snapshot.update((await client.get("/api/overview")).json())
            rows[:] = [e for e in snapshot["recent"] if e["task_id"] == report.task_id]
            return bool(rows)

        await until(row_shown)
        assert rows[0]["progress"] == {"value": {"done": 1, "total": 2}}
        app.open_gate("report")

        # a workflow: a step names its workflow and the step after it; the workflow its steps
        await flow.wait_result(timeout=15)
        step = f"{flow.task_id}-w.0"
        page = await _page(client, step, lambda p: p["workflow"] and p["workflow"]["next"])
        assert page["workflow"]["id"] == flow.task_id
        assert page["workflow"]["path"] == "w.0"
        assert page["workflow"]["next"] == [
            {"task_id": f"{flow.task_id}-w.1", "status": "succeeded"}
        ]
        page = await _page(client, flow.task_id, lambda p: len(p["workflow"]["steps"]) == 2)
        assert (page["task_name"], page["status"]) == ("chain", "succeeded")
        assert page["result"]["return_value"] == {"value": 6}
        assert [s["task_id"] for s in page["workflow"]["steps"]] == [step, f"{flow.task_id}-w.1"]
        assert (await client.get("/api/tasks/no-such-task")).status_code == 404

        # a worker: its heartbeat and the tasks it ran
        name = snapshot["workers"][0]["name"]
        found = (await client.get(f"/api/workers/{name}")).json()
        assert found["live"] is True
        assert found["heartbeat"]["pid"] == worker.pid
        assert flaky.task_id in [entry["task_id"] for entry in found["recent"]]
        assert (await client.get("/api/workers/nobody:1")).status_code == 404

        # filters: by name (or the start of an id), state and queue
        async def listed(**chosen: str) -> set[str]:
            answer = await client.get("/api/overview", params=chosen)
            assert answer.status_code == 200, answer.text
            return {entry["task_id"] for entry in answer.json()["recent"]}

        assert await listed(name="FLAKY") == {flaky.task_id}
        assert await listed(name=boom.task_id[:8]) == {boom.task_id}
        assert await listed(state="failed") == {boom.task_id}
        assert await listed(name="add", state="succeeded") == {step, f"{flow.task_id}-w.1"}
        assert await listed(queue="nobody") == set()
        too_long = await client.get("/api/overview", params={"name": "x" * 201})
        assert too_long.status_code == 422


async def test_history_outlives_a_restart_and_ignores_what_the_app_did_not_sign(
    make_app: Callable[..., Awaitable[App]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", "the-apps-key")  # the web process's too
    app = await make_app()
    now = time.time()
    history = History(app.broker.state, app.broker.signer)
    for i in range(30, 0, -1):  # what a web process recorded over the last five minutes
        await history.record(Point(t=now - i * 10, succeeded=100 - i, workers=1))
    web = start_web(app)
    try:
        async with web.client() as client:
            points = (await client.get("/api/history")).json()["points"]
            assert len(points) >= 30  # and the web process's own point, once its step began
            assert points[0][:2] == [pytest.approx(now - 300), 70]
            day = (await client.get("/api/history", params={"series": "day"})).json()
            assert (day["step"], day["size"]) == (300.0, 288)
            assert (await client.get("/api/history", params={"series": "year"})).status_code == 422
        web.stop()
        await app.broker.state.put_history("day", msgspec.json.encode([[now, 5]]), 60)  # no key
        web = start_web(app)  # a restart: the stored points are still there
        async with web.client() as client:
            again = (await client.get("/api/history")).json()["points"]
            assert again[:30] == points[:30]
            day = (await client.get("/api/history", params={"series": "day"})).json()
            assert [5] not in [point[1:2] for point in day["points"]]  # the forged one
        unsigned = History(app.broker.state, Signer(None))  # what the app's key did not sign
        assert await unsigned.points("hour") == []
    finally:
        web.stop()
