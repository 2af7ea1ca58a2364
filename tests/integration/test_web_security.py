"""`conveyor web` against an attacker, through a real uvicorn process and real workers: someone
who can write to the broker's store but has no key (the dashboard shows and its Retry sends
again only what the app's workers recorded, with the types they recorded), a client without
the token (nothing of its body is read), a huge or deep call (the dashboard stays small and
whole), another site (no framing, no foreign script), and a token guesser (limited)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import msgspec
import psutil
import pytest

from conveyor.web.app import MAX_BODY
from conveyor.web.auth import COOKIE, FAILURE_LIMIT
from tests.integration.conftest import App, Workers
from tests.integration.webserver import WebServer, serve, start_web, until

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

            await until(listed)
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

            await until(listed)
            shown = overview["recent"] + overview["failed"]
            assert all(isinstance(entry["task_id"], str) for entry in shown), shown
            assert "no-name" not in [entry["task_id"] for entry in shown]
    finally:
        web.stop()


def _raw(web: WebServer, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send `head` and `body` on a socket of its own and return what the server answers
    within `timeout` seconds (b"" when it answers nothing)."""
    port = int(web.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(head + body)
        try:
            return conn.recv(65536)
        except TimeoutError:
            return b""


def _post_head(path: str, length: int | None, token: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def web(app: App) -> Iterator[WebServer]:
    yield from serve(app)


async def test_a_body_is_read_only_with_the_token_and_only_up_to_its_limit(
    app: App, web: WebServer
) -> None:
    send = f"/tasks/{app.name}:add"
    announced = MAX_BODY - 1  # within the limit, never sent: the answer must not wait for it
    refused = _raw(web, _post_head(send, announced), b"[" * 65536)
    assert refused.startswith(b"HTTP/1.1 401"), refused[:200]
    too_large = _raw(web, _post_head(send, 200 * 1024 * 1024, web.token), b"[" * 65536)
    assert too_large.startswith(b"HTTP/1.1 413"), too_large[:200]
    chunk = b"[" * (1024 * 1024)
    frames = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 2)
    chunked = b"".join(frames)
    streamed = _raw(web, _post_head(send, None, web.token), chunked)
    assert streamed.startswith(b"HTTP/1.1 413"), streamed[:200]
    async with web.client() as client:  # a body within the limit is taken as before
        answer = await client.post(send, json={"args": [1, 2]})
        assert answer.status_code == 202, answer.text


async def test_the_dashboard_stays_small_and_whole_whatever_was_sent(
    app: App, web: WebServer
) -> None:
    big = "x" * (3 * 1024 * 1024)
    deep: Any = 0
    for _ in range(300):
        deep = [deep]
    async with web.client() as client:
        for _ in range(3):  # to a queue nobody reads: only this web process knows them
            sent = await client.post(
                f"/tasks/{app.name}:sleepy", json={"args": [big], "labels": {"queue": "nobody"}}
            )
            assert sent.status_code == 202, sent.text[:200]
        # Nesting is bounded in the whole message (a label here: arguments are checked against
        # their annotations first, so a nested list for `x: int` is refused for its type).
        refused = await client.post(
            f"/tasks/{app.name}:add", json={"args": [1, 2], "labels": {"deep": deep}}
        )
        assert refused.status_code == 422, refused.text[:200]
        assert "nested" in refused.json()["detail"]
        refused = await client.post(f"/tasks/{app.name}:add", json={"args": [deep, 1]})
        assert refused.status_code == 422, refused.text[:200]
        assert "argument 'x': Expected `int`, got `array`" in refused.json()["detail"]
        overview = await client.get("/api/overview")
        assert overview.status_code == 200
        assert len(overview.content) < 100_000, len(overview.content)
        shown = [e for e in overview.json()["recent"] if e.get("queue") == "nobody"]
        assert len(shown) == 3
        assert all(e["args"] == [] and e["args_text"].endswith("...") for e in shown), shown


async def test_every_answer_forbids_framing_and_foreign_scripts(web: WebServer) -> None:
    async with web.client() as client:
        answers = [await client.get(path) for path in ("/", "/api/overview", "/docs")]
    async with httpx.AsyncClient(base_url=web.url) as anonymous:
        answers += [await anonymous.get("/"), await anonymous.get("/tasks/health")]
    for answer in answers:
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy, answer.url
        assert "default-src 'self'" in policy, answer.url
        assert "http" not in policy, answer.url  # no other origin, no CDN
        assert answer.headers["x-frame-options"] == "DENY"


async def test_the_session_cookie_is_not_the_token_and_logins_are_limited(
    web: WebServer,
) -> None:
    async with httpx.AsyncClient(base_url=web.url) as browser:
        signed_in = await browser.post("/", data={"token": web.token})
        assert signed_in.status_code == 303
        assert web.token not in signed_in.headers["set-cookie"]
        assert (await browser.get("/api/overview")).status_code == 200  # the cookie works
    async with httpx.AsyncClient(base_url=web.url, cookies={COOKIE: web.token}) as forger:
        assert (await forger.get("/api/overview")).status_code == 401  # the token is no cookie
    async with httpx.AsyncClient(base_url=web.url) as guesser:
        for _ in range(FAILURE_LIMIT - 1):  # one guess went in the cookie above
            assert (await guesser.post("/", data={"token": "guess"})).status_code == 401
        blocked = await guesser.post("/", data={"token": web.token})  # not even compared
        assert blocked.status_code == 429
        assert "Too many wrong tokens" in blocked.text
        assert int(blocked.headers["retry-after"]) > 0


async def test_the_token_can_come_from_a_file_and_health_names_no_path(app: App) -> None:
    secret = "file-token-7c1e"
    token_file = app.root / "token"
    token_file.write_text(f"{secret}\n")
    server = start_web(app, secret, "--token-file", str(token_file))
    try:
        command_line = " ".join(psutil.Process(server.proc.pid).cmdline())
        assert secret not in command_line
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            health = await anonymous.get("/tasks/health")
            assert health.json()["broker"] == "sqlite"
            assert str(app.root) not in health.text
            assert (await anonymous.get("/api/overview")).status_code == 401
        async with server.client() as client:  # the file's token
            assert (await client.get("/api/overview")).status_code == 200
            assert str(app.root) in (await client.get("/tasks/health")).json()["broker"]
    finally:
        server.stop()


def test_a_token_file_that_cannot_be_read_is_one_line(app: App) -> None:
    missing = app.root / "no-such-token"
    argv = [sys.executable, "-m", "conveyor", "web", app.spec, "--token-file", str(missing)]
    done = subprocess.run(argv, cwd=app.root, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"conveyor: error: cannot read the token file {missing}: No such file or directory"
    ]
