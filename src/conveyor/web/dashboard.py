"""The dashboard: its page and static files, a live snapshot (JSON and Server-Sent Events) and
the operator's actions (retry, cancel, requeue from the dead-letter queue, purge)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.responses import StreamingResponse as Streaming
from pydantic import BaseModel

from conveyor.broker import Broker
from conveyor.history import History
from conveyor.inspector import Inspector
from conveyor.message import TaskMessage
from conveyor.options import TaskOptions
from conveyor.web.auth import (
    COMMON_ANSWERS,
    COOKIE,
    Detail,
    Gate,
    bearer_scheme,
    not_cross_site,
    retry_after,
)
from conveyor.web.overview import SharedOverview, selected
from conveyor.web.routing import CONTENT_POLICY, BrokerRoute, guarded_route
from conveyor.web.state import WebState
from conveyor.web.views import add_views, sampling
from conveyor.workflows import WORKFLOW_LABEL

__all__ = ["dashboard_router"]


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


STREAM_SECONDS = 1.0
LOGIN_BODY_LIMIT = 4096
_SCRIPTS = ("dom.js", "charts.js", "pages.js", "app.js")
_STATIC = {
    **dict.fromkeys(_SCRIPTS, "text/javascript"),
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
#: Query parameters of the page that the login keeps (what a shared link points at).
_PAGE_PARAMETERS = ("task", "worker", "name", "state", "queue", "series")
#: Filters of the recent tasks (`conveyor.web.overview.selected`).
Filter = Annotated[str, Query(max_length=200)]
StatusFilter = Annotated[str, Query(alias="state", max_length=200)]


@functools.cache
def _login_page() -> tuple[str, str]:
    """The login page, styled by the dashboard's own style sheet (inline: the sheet's route
    needs the token), and its `Content-Security-Policy` allowing that one style by its hash."""
    style = _static("style.css").decode()
    icon = base64.b64encode(_static("favicon.svg")).decode()
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>conveyor</title>
<link rel="icon" href="data:image/svg+xml;base64,{icon}"><style>{style}</style></head>
<body class="login"><header><h1><img src="data:image/svg+xml;base64,{icon}" alt="" width="22"
height="22"> conveyor</h1></header><main><section class="panel">
<h2>Sign in</h2><p class="message">MESSAGE</p><form method="post">
<input name="token" type="password" placeholder="token" aria-label="token"
autocomplete="current-password" autofocus>
<button>Open</button></form></section></main></body></html>"""
    return page, f"{CONTENT_POLICY}; style-src 'sha256-{_sha256(style)}'"


class RequeueIn(BaseModel):
    """Which dead letters to requeue; all when `task_ids` is null."""

    task_ids: list[str] | None = None


def _static(name: str) -> bytes:
    return resources.files("conveyor.web").joinpath("static", name).read_bytes()


def _login(message: str, status: int = 401, headers: dict[str, str] | None = None) -> Response:
    page, policy = _login_page()
    answer = HTMLResponse(page.replace("MESSAGE", message), status_code=status, headers=headers)
    answer.headers["Content-Security-Policy"] = policy
    return answer


def dashboard_router(broker: Broker, state: WebState, gate: Gate, max_body: int) -> APIRouter:
    """The page at `/`, its files at `/static/...` and its JSON API at `/api/...` (bodies of
    at most `max_body` bytes)."""
    inspector, history = Inspector(broker), History(broker.state, broker.signer)
    shared = SharedOverview(broker, inspector, state, STREAM_SECONDS * 0.9, history)
    public = APIRouter(route_class=BrokerRoute, lifespan=sampling(shared))
    web = APIRouter(
        dependencies=[Security(bearer_scheme), Depends(not_cross_site)],
        responses=COMMON_ANSWERS,
        route_class=guarded_route(gate),
        max_body_size=max_body,
    )

    @public.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        if not gate.admits(request):
            return _login("This dashboard needs its token.")
        return HTMLResponse(_static("index.html"))

    @public.post("/", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        """The login form: the token comes in the body and never into a URL (where access
        logs and the browser's history would keep it); the cookie holds a value derived
        from it."""
        return await _sign_in(gate, request)

    @web.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _STATIC:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return Response(_static(name), media_type=_STATIC[name])

    @web.get("/api/overview", tags=["dashboard"])
    async def snapshot(name: Filter = "", status: StatusFilter = "", queue: Filter = "") -> Any:
        """Everything the dashboard shows, at once; the recent and failed tasks only those
        whose name contains `name` (or whose id starts with it), of status `state` and queue
        `queue`, when given."""
        return selected(await shared.get(), name, status, queue)

    @web.get("/api/stream", include_in_schema=False)
    async def stream(
        request: Request, name: Filter = "", status: StatusFilter = "", queue: Filter = ""
    ) -> Streaming:
        chosen = {"name": name, "state": status, "queue": queue}
        return Streaming(_events(shared, request, chosen), media_type="text/event-stream")

    _actions(web, broker, inspector, state)
    add_views(web, broker, inspector, state, history)
    public.include_router(web)
    return public


async def _sign_in(gate: Gate, request: Request) -> Response:
    wait = gate.sign_in(request, await _form_token(request))
    if wait is not None and wait > 0:
        seconds = retry_after(wait)
        message = f"Too many wrong tokens: try again in {seconds} s."
        return _login(message, 429, {"Retry-After": str(seconds)})
    if wait is not None:
        return _login("Wrong token.")
    answer = RedirectResponse(_same_page(request), 303)
    if gate.token is not None:
        secure = request.url.scheme == "https"
        answer.set_cookie(COOKIE, gate.session, httponly=True, samesite="strict", secure=secure)
    return answer


def _same_page(request: Request) -> str:
    """This page, relative (so right behind a proxy), with the query naming what it shows."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k in _PAGE_PARAMETERS]
    return "./" + (f"?{urlencode(kept[: len(_PAGE_PARAMETERS)])}" if kept else "")


async def _form_token(request: Request) -> str | None:
    """The `token` field of a small url-encoded form body, or None."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY_LIMIT:
            return None
    values = parse_qs(body.decode(errors="replace")).get("token")
    return values[0] if values else None


async def _events(shared: SharedOverview, request: Request, chosen: dict[str, str]) -> Any:
    """Server-Sent Events: a snapshot (its tasks `selected`) every `STREAM_SECONDS` until the
    client goes away."""
    while not await request.is_disconnected():
        try:
            data = selected(await shared.get(), **chosen)
            yield f"data: {json.dumps(data, default=repr)}\n\n"
        except Exception as exc:  # an outage: say so and keep the stream open
            yield f"event: problem\ndata: {json.dumps(f'{type(exc).__name__}: {exc}')}\n\n"
        await asyncio.sleep(STREAM_SECONDS)


def _actions(web: APIRouter, broker: Broker, inspector: Inspector, state: WebState) -> None:
    @web.post("/api/tasks/{task_id}/retry", tags=["dashboard"], responses={404: {"model": Detail}})
    async def retry(task_id: str) -> Any:
        """Send a failed (or any recent) task again with the same arguments, as a new task.

        Only that task runs again: a workflow step's retry does not resume the rest of its chain.
        """
        message = await _find_message(broker, inspector, state, task_id)
        if message is None:
            return JSONResponse({"detail": f"no recent task {task_id!r}"}, status_code=404)
        labels = {k: v for k, v in message.labels.items() if k != WORKFLOW_LABEL}
        again = broker.build_message(
            message.task_name, message.args, message.kwargs, None, labels, None
        )
        await broker.send([again])
        queue = TaskOptions.parse(again.labels, again.task_name).queue
        state.sent(again.task_id, again.task_name, again.args, again.kwargs, again.labels, queue)
        return {"task_id": again.task_id, "retry_of": task_id}

    @web.post("/api/tasks/{task_id}/cancel", tags=["dashboard"])
    async def cancel(task_id: str) -> dict[str, Any]:
        """Cancel a task: dropped if still queued, stopped if running."""
        removed = await broker.get_handle(task_id).cancel()
        return {"task_id": task_id, "removed_from_queue": removed}

    @web.post("/api/dead-letters/requeue", tags=["dashboard"])
    async def requeue(body: RequeueIn | None = None) -> dict[str, int]:
        """Move dead letters (all, or the given ids) back to their queues."""
        ids = body.task_ids if body is not None else None
        return {"requeued": await broker.requeue_dead(ids)}

    @web.post("/api/queues/{queue}/purge", tags=["dashboard"])
    async def purge(queue: str) -> dict[str, int]:
        """Delete the waiting messages of a queue (the dashboard asks for a confirmation)."""
        return {"purged": await broker.transport.purge(queue)}


async def _find_message(
    broker: Broker, inspector: Inspector, state: WebState, task_id: str
) -> TaskMessage | None:
    """The message of a recent task: from the dead-letter store, else the recent lists."""
    for letter in await inspector.dead_letters(1000):
        if letter.task_id == task_id:
            try:
                return broker.codec.decode(letter.body)
            except Exception:
                break  # an unreadable letter: try the recent lists
    recent, failed = await inspector.recent()
    for entry in [*failed, *recent, state.find(task_id) or {}]:
        cut = entry.get("args_text") is not None or entry.get("labels_text") is not None
        if entry.get("task_id") == task_id and not cut:  # cut: not the whole message
            return TaskMessage(
                task_id=task_id,
                task_name=entry["task_name"],
                labels=dict(entry.get("labels") or {}),
                args=list(entry.get("args") or []),
                kwargs=dict(entry.get("kwargs") or {}),
            )
    return None
