"""`create_app(broker)`: the whole web app; `router(broker)`: its routes for your FastAPI app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from conveyor.broker import Broker
from conveyor.web.api import api_router
from conveyor.web.auth import guard, resolve_token
from conveyor.web.dashboard import dashboard_router
from conveyor.web.state import WebState

__all__ = ["create_app", "router"]


def router(broker: Broker, *, token: str | None = None) -> APIRouter:
    """The routes of SPEC §8 (API, `/metrics`, dashboard) for `app.include_router(...)`.

    Args:
        broker: the broker whose tasks are sent and inspected.
        token: the bearer token every route but `/tasks/health` needs;
            `CONVEYOR_WEB_TOKEN` when None; no authentication when neither is set.
    """
    token = resolve_token(token)
    state, check = WebState(), guard(token)
    routes = APIRouter()
    routes.include_router(api_router(broker, state, check))
    routes.include_router(dashboard_router(broker, state, check, token))
    return routes


def create_app(broker: Broker, *, token: str | None = None, title: str = "conveyor") -> FastAPI:
    """A FastAPI app serving `router(broker)` that starts and stops the broker with itself."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.startup()
        try:
            yield
        finally:
            await broker.shutdown()

    token = resolve_token(token)
    app = FastAPI(
        title=title,
        lifespan=lifespan,
        version=_version(),
        openapi_url=None,  # served below, behind the token like every route but health
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(router(broker, token=token))
    guarded = [Depends(guard(token))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{title} API")

    return app


def _version() -> str:
    from conveyor import __version__

    return __version__
