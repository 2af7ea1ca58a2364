"""`examples/fastapi_app` run as its README says (`python examples/fastapi_app/main.py`, on the
embedded SQLite default with its in-app worker): every endpoint of the integration guide."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.slow

MAIN = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app" / "main.py"


@pytest.fixture
def example(tmp_path: Path) -> Iterator[str]:
    """The example app in `tmp_path` (its conveyor.db and data/ land there); its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PORT"] = str(port)
    log = tmp_path / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(MAIN)], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/tasks/health", timeout=1).json()["workers"] == 1:
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield url
        proc.terminate()
        assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert "Application shutdown complete" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        print(log.read_text()[-4000:])


async def _run(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    sent = await client.post(path, json=body)
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "queued"
    task_id = sent.json()["task_id"]
    result = await client.get(f"/tasks/result/{task_id}", params={"timeout": 20})
    assert result.status_code == 200, result.text
    assert result.json()["status"] == "succeeded", result.json()
    status = await client.get(f"/tasks/status/{task_id}")
    assert status.json()["status"] == "succeeded"
    return result.json()["return_value"]


async def test_the_guides_endpoints(example: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=example, timeout=30) as client:
        mail = {"to": "a@example.com", "subject": "Hi", "body": "Hello", "priority": "high"}
        sent = await _run(client, "/tasks/email/send", mail)
        assert sent["via"] == "outbox"
        eml = (tmp_path / "data" / "outbox" / f"{sent['message_id']}.eml").read_text()
        assert "Subject: Hi" in eml

        (tmp_path / "notes.txt").write_text("one two\nthree\n")
        file = {"file_path": str(tmp_path / "notes.txt"), "operation": "analyze"}
        analyzed = await _run(client, "/tasks/files/process", file)
        assert (analyzed["lines"], analyzed["words"]) == (2, 3)
        upper = await _run(client, "/tasks/files/process", {**file, "operation": "uppercase"})
        assert await asyncio.to_thread(Path(upper["output"]).read_text) == "ONE TWO\nTHREE\n"

        fetched = await _run(client, "/tasks/external/fetch", {"url": f"{example}/tasks/health"})
        assert fetched["status"] == 200
        assert fetched["body"]["status"] == "ok"

        report = {
            "report_type": "sales",
            "date_from": "2024-01-01",
            "date_to": "2024-01-31",
            "format": "csv",
            "email_to": ["m@example.com", "n@example.com"],
        }
        made = await _run(client, "/tasks/reports/generate", report)
        assert made["rows"] == 31
        assert (await asyncio.to_thread(Path(made["report"]).read_text)).count("\n") == 32
        for task_id in made["notifications"]:
            notice = await client.get(f"/tasks/result/{task_id}", params={"timeout": 20})
            assert notice.json()["return_value"]["status"] == "sent"

        names = {task["name"] for task in (await client.get("/tasks/")).json()}
        assert {"email.send", "files.process", "external.fetch", "reports.generate"} <= names
        assert (await client.post("/tasks/email/send", json={"subject": "x"})).status_code == 422
        assert "conveyor_tasks_succeeded_total" in (await client.get("/metrics")).text


async def test_the_guides_pdf_report_request(example: str, tmp_path: Path) -> None:
    """The guide's report request, verbatim: a PDF, with the example's own requirements."""
    report = {
        "report_type": "sales",
        "date_from": "2024-01-01",
        "date_to": "2024-01-31",
        "format": "pdf",
        "email_to": ["manager@example.com"],
    }
    async with httpx.AsyncClient(base_url=example, timeout=30) as client:
        made = await _run(client, "/tasks/reports/generate", report)
    pdf = await asyncio.to_thread(Path(made["report"]).read_bytes)
    assert made["rows"] == 31
    assert made["report"].endswith(".pdf")
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert b"sales report, 2024-01-01 to 2024-01-31" in pdf  # the document's title
