"""The route classes of every web route: the token checked before the body is read, the same
security headers on every answer, and a broker outage as a 503 with one line, not a 500.

Route classes rather than app middleware, so that all of it also holds for the routes of
`conveyor.web.router(broker)` mounted in someone else's app. The body's size is capped by
FastAPI (`max_body_size` of the routers), after the token check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from conveyor.errors import BrokerError
from conveyor.web.auth import Gate

__all__ = ["CONTENT_POLICY", "SECURITY_HEADERS", "BrokerRoute", "guarded_route"]

log = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

#: The pages load only their own files, connect only to their origin, and cannot be framed
#: (the dashboard's Purge is two clicks: no page of another site may overlay it).
CONTENT_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: Headers every answer carries; a route may set its own `Content-Security-Policy`.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BrokerRoute(APIRoute):
    """An `APIRoute` open to everyone whose answers carry `SECURITY_HEADERS`, and that answers
    503 `{"detail": ...}` when the broker cannot be reached (broker errors name the URL with its
    password hidden, so the line is safe to show)."""

    gate: Gate | None = None

    def get_route_handler(self) -> Handler:
        """The route's handler, behind the gate, with the headers and 503 answers added."""
        handler, gate = super().get_route_handler(), self.gate

        async def handle(request: Request) -> Response:
            answer = gate.refusal(request) if gate is not None else None
            if answer is None:
                answer = await _serve(handler, request)
            for name, value in SECURITY_HEADERS.items():
                answer.headers.setdefault(name, value)
            return answer

        return handle


def guarded_route(gate: Gate) -> type[BrokerRoute]:
    """A `BrokerRoute` class whose routes answer 401 (or 429) before reading anything of a
    request that does not pass `gate`."""
    return type("GuardedRoute", (BrokerRoute,), {"gate": gate})


async def _serve(handler: Handler, request: Request) -> Response:
    try:
        return await handler(request)
    except (BrokerError, ConnectionError) as exc:
        text = " ".join((str(exc) or type(exc).__name__).split())
        log.warning("%s %s: %s", request.method, request.url.path, text)
        return JSONResponse({"detail": f"broker unavailable: {text}"}, status_code=503)
