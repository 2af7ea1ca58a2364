"""The HTTP API of `conveyor web` (SPEC §8) through a real uvicorn process and real workers:
send, status, result, list, health, auth on every route, the token kept out of URLs and logs,
no state change from another site, 503 during an outage, /metrics counts, and schemathesis."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import conveyor
from conveyor.web.auth import FAILURE_LIMIT, FAILURE_WINDOW
from tests.integration.conftest import App, Workers
from tests.integration.webserver import WebServer, serve, start_web, until
from tests.servers import PrivateRedis, unique_prefix

pytestmark = pytest.mark.slow


@pytest.fixture
def web(app: App) -> Iterator[WebServer]:
    yield from serve(app)


async def _send(client: httpx.AsyncClient, name: str, *args: Any, **labels: Any) -> str:
    answer = await client.post(f"/tasks/{name}", json={"args": list(args), "labels": labels})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "queued"
    task_id: str = body["task_id"]
    return task_id


async def test_send_status_result_list_and_health(
    app: App, workers: Workers, web: WebServer
) -> None:
    workers.start(app)
    async with web.client() as client:
        task_id = await _send(client, f"{app.name}:add", 2, 3)
        result = await client.get(f"/tasks/result/{task_id}", params={"timeout": 15})
        assert result.status_code == 200, result.text
        assert result.json()["return_value"] == 5
        assert result.json()["status"] == "succeeded"
        status = await client.get(f"/tasks/status/{task_id}")
        assert status.json() == {"task_id": task_id, "status": "succeeded", "progress": None}

        slow = await _send(client, f"{app.name}:report")
        pending = await client.get(f"/tasks/result/{slow}")
        assert pending.status_code == 202
        assert pending.json()["status"] in {"queued", "running"}
        app.open_gate("report")
        done = await client.get(f"/tasks/result/{slow}", params={"timeout": 15})
        assert done.status_code == 200

        tasks = {t["name"]: t for t in (await client.get("/tasks/")).json()}
        assert tasks[f"{app.name}:add"]["parameters"] == ["x: int", "y: int"]
        health = await client.get("/tasks/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["workers"] == 1


async def test_errors_are_404_and_422(web: WebServer, app: App) -> None:
    async with web.client() as client:
        assert (await client.post("/tasks/no.such.task", json={})).status_code == 404
        bad_args = await client.post(f"/tasks/{app.name}:add", json={"args": [1]})
        assert bad_args.status_code == 422
        assert "y" in bad_args.json()["detail"]
        wrong_type = await client.post(f"/tasks/{app.name}:add", json={"args": ["x", 2]})
        assert wrong_type.status_code == 422
        assert "argument 'x': Expected `int`, got `str`" in wrong_type.json()["detail"]
        bad_label = await client.post(
            f"/tasks/{app.name}:add", json={"args": [1, 2], "labels": {"priority": 42}}
        )
        assert bad_label.status_code == 422
        assert (await client.get("/tasks/status/nope")).status_code == 404
        assert (await client.get("/tasks/result/nope")).status_code == 404


async def test_a_retried_workflow_step_does_not_resume_its_chain(
    app: App, workers: Workers, web: WebServer
) -> None:
    workers.start(app)
    boom = f"{app.name}:boom"
    await conveyor.chain(app.module.boom.s(), app.module.add.s(1)).kiq()
    async with web.client() as client:
        failed: list[dict[str, Any]] = []

        async def step_failed() -> bool:
            snapshot = (await client.get("/api/overview")).json()
            failed[:] = [e for e in snapshot["failed"] if e["task_name"] == boom]
            return bool(failed)

        await until(step_failed)
        step = failed[0]
        assert "workflow" not in step["labels"]  # the rest of the chain is not listed
        stored = await client.get(f"/tasks/result/{step['task_id']}")
        assert "workflow" in stored.json()["labels"]
        retried = await client.post(f"/api/tasks/{step['task_id']}/retry")
        assert retried.status_code == 200, retried.text
        again = await client.get(
            f"/tasks/result/{retried.json()['task_id']}", params={"timeout": 15}
        )
        assert again.json()["status"] == "failed"
        assert "workflow" not in again.json().get("labels", {})  # empty labels are left out


async def test_every_route_but_health_needs_the_token(web: WebServer) -> None:
    async with web.client() as client:
        schema = (await client.get("/openapi.json")).json()
    routes = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, methods in schema["paths"].items()
        for method in methods
    ]
    routes += [("GET", "/"), ("GET", "/openapi.json"), ("GET", "/docs")]
    routes += [("GET", "/static/app.js"), ("GET", "/api/stream")]
    assert ("GET", "/metrics") in routes
    async with httpx.AsyncClient(base_url=web.url, follow_redirects=True) as anonymous:
        for method, path in routes:
            answer = await anonymous.request(method, path, json={})
            expected = 200 if path == "/tasks/health" else 401
            assert answer.status_code == expected, (method, path, answer.text)
        page = await anonymous.post("/", data={"token": web.token})  # the login form
        assert page.status_code == 200  # the redirect set the cookie the page is read with
        assert "conveyor" in page.text
        assert (await anonymous.get("/metrics")).status_code == 200
    guesses, wrong = 0, {"Authorization": "Bearer wrong"}
    async with httpx.AsyncClient(base_url=web.url) as guesser:
        for method, path in routes:
            answer = await guesser.request(method, path, headers=wrong, json={})
            if path == "/tasks/health":
                expected = 200
            elif path == "/":
                expected = 401  # the login page
            else:  # a wrong guess: counted, and after too many even a right token waits
                expected, guesses = (401 if guesses < FAILURE_LIMIT else 429), guesses + 1
            assert answer.status_code == expected, (method, path, answer.text)
        assert guesses > FAILURE_LIMIT
        blocked = await guesser.get("/metrics", headers=web.auth)
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["retry-after"]) <= FAILURE_WINDOW


async def test_the_token_stays_out_of_urls_and_logs(web: WebServer) -> None:
    async with httpx.AsyncClient(base_url=web.url, follow_redirects=True) as browser:
        wrong = await browser.post("/", data={"token": "wrong"})
        assert wrong.status_code == 401
        assert "Wrong token" in wrong.text
        in_url = await browser.get("/", params={"token": web.token})
        assert in_url.status_code == 401  # a token in the URL is not taken
        page = await browser.post("/", data={"token": web.token})
        assert page.status_code == 200
        login = page.history[0]
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert (await browser.get("/api/overview")).status_code == 200
    output = web.output()
    assert '"POST / HTTP/1.1" 303' in output, output  # access lines are logged...
    assert '"GET / HTTP/1.1" 401' in output, output  # ...without their query string
    assert web.token not in output


async def test_state_changes_need_a_request_no_other_site_can_send(
    web: WebServer, app: App
) -> None:
    purge = "/api/queues/default/purge"
    async with httpx.AsyncClient(base_url=web.url, follow_redirects=True) as browser:
        await browser.post("/", data={"token": web.token})  # signed in by cookie, as a browser
        plain = {"content-type": "text/plain"}
        for options in ({}, {"data": {"a": "b"}}, {"content": b"{}", "headers": plain}):
            refused = await browser.post(purge, **options)
            assert refused.status_code == 403, (options, refused.text)
        form = await browser.post(f"/tasks/{app.name}:add", content=b"{}", headers=plain)
        assert form.status_code == 403
        assert (await browser.post(purge, headers={"x-conveyor": "1"})).json() == {"purged": 0}
        assert (await browser.post(purge, json={})).json() == {"purged": 0}
        # DNS rebinding: a page whose own name points at 127.0.0.1 is not answered
        evil = await browser.get("/tasks/health", headers={"host": "evil.example"})
        assert evil.status_code == 400
        port = web.url.rsplit(":", 1)[1]
        local = await browser.get("/tasks/health", headers={"host": f"localhost:{port}"})
        assert local.status_code == 200
    async with web.client() as api:  # curl-like: a bearer token and no body is fine
        assert (await api.post(purge)).json() == {"purged": 0}


def _samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, task name) -> value of the conveyor_tasks_* and duration samples."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("conveyor_task") and "le" not in sample.labels:
                found[(sample.name, sample.labels.get("task_name", ""))] = sample.value
    return found


async def test_metrics_count_a_run_exactly_with_two_processes(
    app: App, workers: Workers, web: WebServer
) -> None:
    supervisor = workers.start(app, "--workers", "2", "--max-async-tasks", "2")
    add, boom, flaky, work = (f"{app.name}:{n}" for n in ("add", "boom", "flaky", "work"))
    async with web.client() as client:
        ids = [await _send(client, add, i, i) for i in range(20)]
        ids += [await _send(client, boom) for _ in range(3)]
        ids += [await _send(client, flaky, 1)]
        ids += [await _send(client, work, i, 0.3) for i in range(6)]
        ran_on = set()
        for task_id in ids:
            answer = await client.get(f"/tasks/result/{task_id}", params={"timeout": 30})
            assert answer.status_code == 200, answer.text
            ran_on.add(answer.json()["worker"])
        assert len(ran_on) == 2, "both worker processes should have run tasks"
        expected = {
            ("conveyor_tasks_received_total", add): 20,
            ("conveyor_tasks_succeeded_total", add): 20,
            ("conveyor_task_duration_seconds_count", add): 20,
            ("conveyor_tasks_received_total", boom): 3,
            ("conveyor_tasks_failed_total", boom): 3,
            ("conveyor_tasks_succeeded_total", boom): 0,
            ("conveyor_tasks_received_total", flaky): 2,
            ("conveyor_tasks_retried_total", flaky): 1,
            ("conveyor_tasks_succeeded_total", flaky): 1,
            ("conveyor_task_duration_seconds_count", flaky): 2,
            ("conveyor_tasks_succeeded_total", work): 6,
            ("conveyor_tasks_in_flight", ""): 0,
        }

        async def counted() -> bool:
            samples = _samples((await client.get("/metrics")).text)
            return {key: samples.get(key) for key in expected} == expected

        await until(counted)
        text = (await client.get("/metrics")).text
        work_sum = _samples(text)[("conveyor_task_duration_seconds_sum", work)]
        assert 6 * 0.3 <= work_sum < 6 * 1.0
        assert "conveyor_workers 2.0" in text
        assert supervisor.terminate(20) == 0  # the last flush on stop adds nothing twice
        samples = _samples((await client.get("/metrics")).text)
        assert {key: samples.get(key) for key in expected} == expected


@pytest.mark.parametrize(
    "operations",
    [
        # the long poll of results is fuzzed alone: among tasks the fuzzer sent (some far in the
        # future) it would wait up to its 60 s `timeout` for each
        ["--exclude-path", "/tasks/result/{task_id}"],
        ["--include-path", "/tasks/result/{task_id}"],
    ],
    ids=["all-but-result", "result"],
)
def test_schemathesis_finds_no_server_error(
    web: WebServer, operations: list[str], tmp_path: Path
) -> None:
    """Every operation of /openapi.json, fuzzed: no 5xx and answers that fit the schema."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "run",
        f"{web.url}/openapi.json",
        *operations,
        "--header",
        f"Authorization: Bearer {web.token}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",  # a task's signature is checked at send, not in the schema
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--workers",
        "1",
    ]
    run = subprocess.run(  # in tmp_path: schemathesis keeps a cache in its working directory
        command, cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_cli_mistakes_are_one_line_and_exit_2(app: App) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        for argv in (["no_such_module:broker"], [app.spec, "--port", port]):
            run = subprocess.run(
                [sys.executable, "-m", "conveyor", "web", *argv],
                cwd=app.root,
                env={**os.environ, "CONVEYOR_BROKER_URL": app.url},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert run.returncode == 2, run.stderr
            assert run.stderr.startswith("conveyor: error: "), run.stderr
            assert run.stderr.count("\n") == 1, run.stderr


async def test_health_is_503_while_the_broker_is_down(
    private_redis: PrivateRedis, make_app: Callable[..., Awaitable[App]]
) -> None:
    app = await make_app(url=f"{private_redis.url}?prefix={unique_prefix()}")
    server = start_web(app)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/tasks/health")).status_code == 200
            private_redis.stop()
            down = await client.get("/tasks/health", headers=server.auth)
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable"
            assert f"127.0.0.1:{private_redis.port}" in down.json()["broker"]
            anonymous = (await client.get("/tasks/health")).json()  # no host, no path
            assert (anonymous["broker"], anonymous["status"]) == ("redis", "unavailable")
            assert str(private_redis.port) not in anonymous["error"]
            await _all_unavailable(server)
            private_redis.start()

            async def healthy() -> bool:
                return (await client.get("/tasks/health")).status_code == 200

            await until(healthy)
    finally:
        server.stop()


async def _all_unavailable(server: WebServer) -> None:
    """Every route that reads the broker answers 503 with one line, and logs no traceback.

    Asked at once: each answer waits out the client's retry of its command (about 3 s).
    """
    routes = [
        ("GET", "/tasks/status/x"),
        ("GET", "/tasks/result/x"),
        ("GET", "/metrics"),
        ("GET", "/api/overview"),
        ("POST", "/api/queues/default/purge"),
        ("POST", "/api/tasks/x/cancel"),
    ]
    async with server.client() as client:
        answers = await asyncio.gather(*(client.request(m, path) for m, path in routes))
    for (_, path), answer in zip(routes, answers, strict=True):
        assert answer.status_code == 503, (path, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith("broker unavailable: "), detail
        assert "\n" not in detail
    assert "Traceback" not in server.output()
