"""The integration guide's HTTP API on conveyor, in one command:

    python examples/fastapi_app/main.py          # API, dashboard and a worker on http://127.0.0.1:8000

The task endpoints are the guide's; status, result, health, the task list, `/metrics` and the
dashboard at `/` come from `conveyor.web.router`. With `APP_WORKER=0` the app only sends tasks
and `conveyor worker tasks:broker --workers 4` runs them elsewhere.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from tasks import (
    broker,
    fetch_external_data,
    generate_report,
    process_file,
    send_email_notification,
)

import conveyor.fastapi
import conveyor.web

app = FastAPI(
    title="conveyor example",
    lifespan=conveyor.fastapi.lifespan(broker, worker=os.environ.get("APP_WORKER", "1") != "0"),
)


class TaskResponse(BaseModel):
    """What every task endpoint answers."""

    task_id: str
    status: str = "queued"
    message: str


class EmailRequest(BaseModel):
    """An e-mail to send."""

    to: str
    subject: str
    body: str
    priority: Literal["low", "normal", "high"] = "normal"


class FileRequest(BaseModel):
    """A file to process."""

    file_path: str
    operation: Literal["analyze", "uppercase"] = "analyze"
    options: dict[str, Any] = Field(default_factory=dict)


class FetchRequest(BaseModel):
    """A URL to fetch."""

    url: str
    method: Literal["GET", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(30, gt=0, le=300)


class ReportRequest(BaseModel):
    """A report to build for a period."""

    report_type: str
    date_from: date
    date_to: date
    format: Literal["csv", "json", "pdf"] = "csv"  # pdf: pip install -r requirements.txt
    email_to: list[str] = Field(default_factory=list)


@app.post("/tasks/email/send", response_model=TaskResponse, status_code=202)
async def send_email(request: EmailRequest) -> TaskResponse:
    """Queue an e-mail."""
    handle = await send_email_notification.kiq(**request.model_dump())
    return TaskResponse(task_id=handle.task_id, message=f"e-mail to {request.to} queued")


@app.post("/tasks/files/process", response_model=TaskResponse, status_code=202)
async def files_process(request: FileRequest) -> TaskResponse:
    """Queue the processing of a file."""
    handle = await process_file.kiq(request.file_path, request.operation, request.options)
    return TaskResponse(task_id=handle.task_id, message=f"{request.operation} queued")


@app.post("/tasks/external/fetch", response_model=TaskResponse, status_code=202)
async def external_fetch(request: FetchRequest) -> TaskResponse:
    """Queue a fetch of an external URL."""
    handle = await fetch_external_data.kiq(**request.model_dump())
    return TaskResponse(task_id=handle.task_id, message=f"fetch of {request.url} queued")


@app.post("/tasks/reports/generate", response_model=TaskResponse, status_code=202)
async def reports_generate(request: ReportRequest) -> TaskResponse:
    """Queue a report (and the e-mails announcing it)."""
    handle = await generate_report.kiq(**request.model_dump())
    return TaskResponse(task_id=handle.task_id, message=f"{request.report_type} report queued")


# status, result, health, the task list, /metrics and the dashboard
app.include_router(conveyor.web.router(broker))


if __name__ == "__main__":
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        timeout_graceful_shutdown=3,
    )
