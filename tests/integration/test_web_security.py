"""The dashboard against someone who can write to the broker's store but has no key: what it
shows and what its Retry sends again is only what the app's workers recorded, with the types
they recorded; through a real `conveyor web` process and real workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

from tests.integration.conftest import App, Workers
from tests.integration.webserver import start_web

pytestmark = pytest.mark.slow


def _entry(app: App, task_id: Any) -> dict[str, Any]:
    """A recent-task record as a worker writes one, for `task_id`."""
    now = time.time()
    return {
        "task_id": task_id,
        "task_name": f"{app.name}:add",
        "status": "failed",
        "args": [1, 2],
        "started": now,
        "finished": now,
        "error": "RuntimeError: planted",
    }


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_retry_sends_again_only_what_the_apps_workers_recorded(
    make_app: Callable[..., Awaitable[App]], workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", "the-apps-key")  # the web and worker processes too
    app = await make_app()
    workers.start(app)
    failed = await (await app.module.boom.kiq()).wait_result(timeout=15)
    planted = {"recent": [_entry(app, "forged")], "failed": [_entry(app, "forged")]}
    await app.broker.state.put_recent("intruder", msgspec.json.encode(planted))
    web = start_web(app)
    try:
        async with web.client() as client:
            shown: list[str] = []

            async def listed() -> bool:
                overview = (await client.get("/api/overview")).json()
                shown[:] = [entry["task_id"] for entry in overview["failed"]]
                return failed.task_id in shown

            await _until(listed)
            assert "forged" not in shown
            refused = await client.post("/api/tasks/forged/retry")
            assert refused.status_code == 404, refused.text
            retried = await client.post(f"/api/tasks/{failed.task_id}/retry")
            assert retried.status_code == 200, retried.text
    finally:
        web.stop()


async def test_recent_records_of_the_wrong_types_are_left_out(app: App, workers: Workers) -> None:
    workers.start(app)
    done = await (await app.module.add.kiq(2, 3)).wait_result(timeout=15)
    planted = {"recent": [_entry(app, 5), {"task_id": "no-name"}], "failed": [_entry(app, 7)]}
    await app.broker.state.put_recent("intruder", msgspec.json.encode(planted))
    web = start_web(app)
    try:
        async with web.client() as client:
            overview: dict[str, Any] = {}

            async def listed() -> bool:
                answer = await client.get("/api/overview")
                assert answer.status_code == 200, answer.text
                overview.update(answer.json())
                return done.task_id in [entry["task_id"] for entry in overview["recent"]]

            await _until(listed)
            shown = overview["recent"] + overview["failed"]
            assert all(isinstance(entry["task_id"], str) for entry in shown), shown
            assert "no-name" not in [entry["task_id"] for entry in shown]
    finally:
        web.stop()
