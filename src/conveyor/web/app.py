"""`create_app(broker)`: the whole web app; `router(broker)`: its routes for your FastAPI app."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from importlib import resources
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from conveyor.broker import Broker
from conveyor.web.api import api_router
from conveyor.web.auth import Gate, resolve_token
from conveyor.web.dashboard import dashboard_router
from conveyor.web.routing import CONTENT_POLICY, guarded_route
from conveyor.web.state import WebState

__all__ = ["MAX_BODY", "create_app", "router"]

#: Default largest request body, in bytes (`--max-body`): a task's arguments sent over HTTP.
MAX_BODY: Final = 16 * 1024 * 1024

_DOCS = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<link rel="icon" href="static/favicon.svg"><link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body><div id="swagger-ui"></div><script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/docs.js"></script></body></html>"""
#: Swagger UI sets inline styles on its elements; nothing else is loosened.
_DOCS_POLICY = f"{CONTENT_POLICY}; style-src 'self' 'unsafe-inline'"
#: Swagger UI's own files, from the `fastapi-offline` package (no CDN: /docs works offline and
#: runs no third-party script in this origin).
_SWAGGER = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


def router(broker: Broker, *, token: str | None = None, max_body: int = MAX_BODY) -> APIRouter:
    """The routes of SPEC §8 (API, `/metrics`, dashboard) for `app.include_router(...)`.

    Args:
        broker: the broker whose tasks are sent and inspected.
        token: the bearer token every route but `/tasks/health` needs;
            `CONVEYOR_WEB_TOKEN` when None; no authentication when neither is set.
        max_body: the largest request body read, in bytes (413 beyond it, after the token
            check).
    """
    return _routes(broker, Gate(resolve_token(token)), max_body)


def _routes(broker: Broker, gate: Gate, max_body: int) -> APIRouter:
    state, routes = WebState(), APIRouter()
    routes.include_router(api_router(broker, state, gate, max_body))
    routes.include_router(dashboard_router(broker, state, gate, max_body))
    return routes


def create_app(
    broker: Broker,
    *,
    token: str | None = None,
    title: str = "conveyor",
    max_body: int = MAX_BODY,
) -> FastAPI:
    """A FastAPI app serving `router(broker)` and its API docs at `/docs`, that starts and
    stops the broker with itself."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.startup()
        try:
            yield
        finally:
            await broker.shutdown()

    gate = Gate(resolve_token(token))
    app = FastAPI(
        title=title,
        lifespan=lifespan,
        version=_version(),
        openapi_url=None,  # served below, behind the token like every route but health
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(_routes(broker, gate, max_body))
    docs = APIRouter(route_class=guarded_route(gate), include_in_schema=False)

    @docs.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @docs.get("/docs")
    async def docs_page() -> HTMLResponse:
        page = HTMLResponse(_DOCS.format(title=f"{title} API"))
        page.headers["Content-Security-Policy"] = _DOCS_POLICY
        return page

    @docs.get("/docs/{name}")
    async def docs_file(name: str) -> Response:
        return _docs_file(name)

    app.include_router(docs)
    return app


def _docs_file(name: str) -> Response:
    if name == "docs.js":
        data = resources.files("conveyor.web").joinpath("static", name).read_bytes()
        return Response(data, media_type="text/javascript")
    if name not in _SWAGGER:
        return JSONResponse({"detail": "not found"}, status_code=404)
    try:
        return Response(_swagger_file(name), media_type=_SWAGGER[name])
    except ModuleNotFoundError:
        detail = "Swagger UI needs fastapi-offline: pip install 'conveyor[web]'"
        return JSONResponse({"detail": detail}, status_code=404)


@functools.cache
def _swagger_file(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def _version() -> str:
    from conveyor import __version__

    return __version__
