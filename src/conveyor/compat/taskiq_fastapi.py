"""`taskiq_fastapi`: tasks depend on FastAPI's `Request` / `HTTPConnection` (and through them
on `request.app.state`) as FastAPI handlers do: `import taskiq_fastapi` becomes
`from conveyor.compat import taskiq_fastapi`.

`init(broker, "app.main:app")` makes every worker process import the app and run its lifespan
(startup and shutdown) with the worker, and resolve `Request = TaskiqDepends()` to a request of
that app, not of any real HTTP request. In a process that only sends tasks nothing happens; with
an `InMemoryBroker` (tests), call `populate_dependency_context(broker, app)` yourself.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from starlette.requests import HTTPConnection

from conveyor.compat.taskiq._broker import AsyncBroker, TaskiqEvents, TaskiqState
from conveyor.context import Depends as TaskiqDepends
from conveyor.errors import ConfigurationError

__all__ = ["TaskiqDepends", "init", "populate_dependency_context"]

AppOrPath = str | FastAPI | Callable[[], FastAPI]


def init(broker: AsyncBroker, app_or_path: AppOrPath) -> None:
    """Run the app's lifespan in worker processes and give tasks its `Request`.

    Args:
        broker: the app's broker (a `conveyor.compat` broker).
        app_or_path: the app, a function making it, or its `module:attribute` path (a string
            avoids a circular import between the app and the tasks).
    """

    async def startup(state: TaskiqState) -> None:
        if not broker.is_worker_process:
            return
        app = _load(app_or_path)
        state.fastapi_app = app
        state.lf_ctx = app.router.lifespan_context(app)
        asgi_state = await state.lf_ctx.__aenter__()
        populate_dependency_context(broker, app, asgi_state)

    async def shutdown(state: TaskiqState) -> None:
        if broker.is_worker_process and "lf_ctx" in state:
            await state.lf_ctx.__aexit__(None, None, None)

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, startup)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, shutdown)


def populate_dependency_context(
    broker: AsyncBroker, app: FastAPI, asgi_state: Mapping[str, Any] | None = None
) -> None:
    """Resolve `Request` and `HTTPConnection` dependencies of tasks to ones of `app` (whose
    `state` is a copy of `asgi_state`, what the app's lifespan yielded)."""
    scope_state = dict(asgi_state or {})

    def scope() -> dict[str, Any]:
        return {"app": app, "type": "http", "state": copy.copy(scope_state)}

    broker.dependency_overrides.update(
        {Request: lambda: Request(scope()), HTTPConnection: lambda: HTTPConnection(scope())}
    )


def _load(app_or_path: AppOrPath) -> FastAPI:
    app: Any = app_or_path
    if isinstance(app_or_path, str):
        module, _, attribute = app_or_path.partition(":")
        app = getattr(importlib.import_module(module), attribute or "app")
    if not isinstance(app, FastAPI) and callable(app):
        app = app()
    if not isinstance(app, FastAPI):
        raise ConfigurationError(f"{app_or_path!r} is not a FastAPI application")
    return app
