"""The `/tasks/...` routes and `/metrics` of SPEC §8: send, status, result, health, list."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from conveyor.broker import Broker
from conveyor.errors import BrokerError, ConveyorError, ResultTimeout
from conveyor.inspector import Inspector
from conveyor.options import TaskOptions
from conveyor.prometheus import read_metrics, render_metrics
from conveyor.web.auth import COMMON_ANSWERS, Detail, Gate, bearer_scheme, not_cross_site
from conveyor.web.routing import BrokerRoute, guarded_route
from conveyor.web.state import WebState

__all__ = ["api_router"]

HEALTH_TIMEOUT = 5.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TaskInfoOut(BaseModel):
    """A registered task."""

    name: str
    labels: dict[str, Any]
    parameters: list[str]


class SendIn(BaseModel):
    """The body of `POST /tasks/{task_name}`."""

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, Any] = Field(default_factory=dict)


class SendOut(BaseModel):
    """A task accepted for running."""

    task_id: str
    status: str
    message: str


class StatusOut(BaseModel):
    """Where a task is, and its last progress."""

    task_id: str
    status: str
    progress: Any = None


class ResultOut(BaseModel):
    """A finished task's result (see `conveyor.TaskResult`)."""

    task_id: str
    task_name: str
    status: str
    return_value: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    execution_time: float = 0.0
    labels: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 1
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None


class HealthOut(BaseModel):
    """The broker, the result store and the live workers."""

    status: str
    broker: str
    results: str
    workers: int
    error: str | None = None


def _detail(status: int, text: str) -> JSONResponse:
    return JSONResponse({"detail": text}, status_code=status)


def api_router(broker: Broker, state: WebState, gate: Gate, max_body: int) -> APIRouter:
    """The routes of SPEC §8 except the dashboard's (bodies of at most `max_body` bytes)."""
    public = APIRouter(route_class=BrokerRoute)
    api = APIRouter(
        dependencies=[Security(bearer_scheme), Depends(not_cross_site)],
        responses=COMMON_ANSWERS,
        route_class=guarded_route(gate),
        max_body_size=max_body,
    )
    inspector = Inspector(broker)

    @api.get("/tasks/", response_model=list[TaskInfoOut], tags=["tasks"])
    async def list_tasks() -> list[TaskInfoOut]:
        """Registered tasks: name, labels and parameters."""
        return [
            TaskInfoOut(name=t.name, labels=t.labels, parameters=t.parameters)
            for t in inspector.tasks()
        ]

    @public.get(
        "/tasks/health",
        response_model=HealthOut,
        responses={503: {"model": HealthOut}},
        tags=["tasks"],
    )
    async def health(request: Request) -> JSONResponse:
        """200 when the broker and result store answer (no token needed), else 503. Without
        the token the broker is named by its kind only and an error by its type (no host, no
        file path)."""
        return await _health(broker, inspector, detailed=gate.admits(request))

    @api.get(
        "/tasks/status/{task_id}",
        response_model=StatusOut,
        responses={404: {"model": Detail}},
        tags=["tasks"],
    )
    async def task_status(task_id: str) -> Any:
        """A task's status and progress."""
        status = await broker.task_status(task_id)
        if status is None:
            return _detail(404, f"no task with id {task_id!r}")
        progress = await broker.get_progress(task_id)
        return StatusOut(task_id=task_id, status=str(status), progress=progress)

    @api.get(
        "/tasks/result/{task_id}",
        response_model=ResultOut,
        responses={202: {"model": StatusOut}, 404: {"model": Detail}},
        tags=["tasks"],
    )
    async def task_result(
        task_id: str,
        timeout: float = Query(0.0, ge=0.0, le=60.0, description="seconds to wait"),
    ) -> Any:
        """200 with the result when done; 202 with the status while it is not."""
        return await _result(broker, task_id, timeout)

    @api.post(
        "/tasks/{task_name}",
        status_code=202,
        response_model=SendOut,
        responses={404: {"model": Detail}, 422: {"model": Detail}},
        tags=["tasks"],
    )
    async def send(task_name: str, body: SendIn | None = None) -> Any:
        """Send a task by name; 404 for an unknown task, 422 for arguments that do not fit."""
        return await _send(broker, state, task_name, body or SendIn())

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        tags=["metrics"],
    )
    async def metrics() -> Response:
        """Prometheus text: task counters, durations, queue depths, in-flight tasks."""
        text = render_metrics(await read_metrics(broker))
        return Response(text, media_type=METRICS_TYPE)

    public.include_router(api)
    return public


async def _health(broker: Broker, inspector: Inspector, *, detailed: bool) -> JSONResponse:
    shown = broker.transport.safe_url if detailed else broker.transport.safe_url.partition(":")[0]
    answer = {"broker": shown, "results": type(broker.result_backend).__name__}
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            workers = await inspector.workers()
            await broker.result_backend.get_result("conveyor-health-check")
    except Exception as exc:  # any failure to answer is "unavailable"
        error = " ".join(f"{type(exc).__name__}: {exc}".split()) if detailed else type(exc).__name__
        body = {**answer, "status": "unavailable", "workers": 0, "error": error}
        return JSONResponse(body, status_code=503)
    return JSONResponse({**answer, "status": "ok", "workers": len(workers)})


async def _result(broker: Broker, task_id: str, timeout: float) -> Any:
    handle = broker.get_handle(task_id)
    result = await handle.get_result()
    if result is None and timeout > 0 and await broker.task_status(task_id) is not None:
        with contextlib.suppress(ResultTimeout):
            result = await handle.wait_result(timeout)
    if result is not None:
        return JSONResponse(msgspec.to_builtins(result, enc_hook=repr))
    status = await broker.task_status(task_id)
    if status is None:
        return _detail(404, f"no task with id {task_id!r}")
    progress = await broker.get_progress(task_id)
    body = StatusOut(task_id=task_id, status=str(status), progress=progress)
    return JSONResponse(body.model_dump(), status_code=202)


async def _send(broker: Broker, state: WebState, task_name: str, body: SendIn) -> Any:
    task = broker.find_task(task_name)
    if task is None:
        return _detail(404, f"no task named {task_name!r}")
    try:
        labels = {**broker.route_labels(task_name), **task.labels, **body.labels}
        queue = TaskOptions.parse(labels, task_name).queue
        handle = await broker.send_task(task, body.args, body.kwargs, labels=body.labels or None)
    except BrokerError as exc:
        return _detail(503, str(exc))
    except (ConveyorError, TypeError, ValueError, OverflowError) as exc:
        return _detail(422, str(exc))
    state.sent(handle.task_id, task_name, body.args, body.kwargs, body.labels, queue)
    return SendOut(task_id=handle.task_id, status="queued", message=f"{task_name} queued")
