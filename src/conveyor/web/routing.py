"""The route class of every web route: a broker outage is a 503 with one line, not a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from conveyor.errors import BrokerError

__all__ = ["BrokerRoute"]

log = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class BrokerRoute(APIRoute):
    """An `APIRoute` that answers 503 `{"detail": ...}` when the broker cannot be reached.

    A route class rather than an app exception handler, so that it also holds for the routes of
    `conveyor.web.router(broker)` mounted in someone else's app. Broker errors name the URL with
    its password hidden, so the line is safe to show.
    """

    def get_route_handler(self) -> Handler:
        """The route's handler, with broker errors turned into 503 answers."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (BrokerError, ConnectionError) as exc:
                text = " ".join((str(exc) or type(exc).__name__).split())
                log.warning("%s %s: %s", request.method, request.url.path, text)
                return JSONResponse({"detail": f"broker unavailable: {text}"}, status_code=503)

        return handle
