"""Who may use the web routes: a bearer token, a session cookie, and no state change from
another site.

API clients send `Authorization: Bearer <token>`. A browser signs in once through the form at
`/` (a POST, so the token is in no URL and no access log) and gets an HTTP-only, same-site
cookie holding a value derived from the token, never the token itself.

Invariants: the token is checked before a request's body is read (`conveyor.web.routing` calls
`Gate.refusal` first); every comparison takes constant time; a client address with
`FAILURE_LIMIT` wrong tokens (or session cookies) within `FAILURE_WINDOW` seconds is answered
429 without any check until its oldest failure leaves the window (a request with no credential
at all is refused but not counted).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import deque
from typing import Any, Final

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

__all__ = [
    "ACTION_HEADER",
    "COMMON_ANSWERS",
    "COOKIE",
    "FAILURE_LIMIT",
    "FAILURE_WINDOW",
    "TOKEN_ENV",
    "Detail",
    "Gate",
    "bearer_scheme",
    "not_cross_site",
    "resolve_token",
    "retry_after",
]

COOKIE: Final = "conveyor_session"
TOKEN_ENV: Final = "CONVEYOR_WEB_TOKEN"
#: The header the dashboard's script sends with its actions.
ACTION_HEADER: Final = "x-conveyor"
#: Failed sign-ins or wrong tokens from one client address tolerated per window.
FAILURE_LIMIT: Final = 10
FAILURE_WINDOW: Final = 60.0
#: Client addresses whose failures are remembered at most (the oldest are forgotten first).
_CLIENTS_KEPT: Final = 4096


class Detail(BaseModel):
    """An error answer."""

    detail: Any = Field(description="a message, or FastAPI's list of validation errors")


#: The error answers every guarded route documents.
COMMON_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": Detail, "description": "the body is not JSON"},
    401: {"model": Detail, "description": "missing or wrong bearer token"},
    403: {"model": Detail, "description": "a state change that could come from another site"},
    413: {"model": Detail, "description": "the body is larger than `--max-body`"},
    422: {"model": Detail, "description": "the request does not fit"},
    429: {"model": Detail, "description": "too many wrong tokens from this address: wait"},
    503: {"model": Detail, "description": "the broker is unreachable"},
}

#: Declares the bearer scheme in the OpenAPI document; the check itself is `Gate.refusal`.
bearer_scheme = HTTPBearer(auto_error=False, description="the token of `conveyor web --token`")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def resolve_token(token: str | None) -> str | None:
    """`token`, else `CONVEYOR_WEB_TOKEN`; None (no authentication) when neither is set."""
    return token or os.environ.get(TOKEN_ENV) or None


class Gate:
    """The token of one web app, checked on every guarded request and at sign-in.

    Args:
        token: the token; None lets everyone in.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token
        key = (token or "").encode()
        self._session = hmac.digest(key, b"conveyor web session", hashlib.sha256).hex()
        self._failures: dict[str, deque[float]] = {}

    @property
    def session(self) -> str:
        """The value of the session cookie: derived from the token, useless as a token."""
        return self._session

    def admits(self, request: Request) -> bool:
        """True when no token is set, or the request carries it or a session cookie."""
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return _same(self.token, value.strip())
        return _same(self._session, request.cookies.get(COOKIE))

    def refusal(self, request: Request) -> Response | None:
        """The answer to a request that may not pass (429 or 401), or None when it may."""
        if self.token is None:
            return None
        client = _client(request)
        wait = self._wait(client)
        if wait > 0:
            return _too_many(wait)
        if self.admits(request):
            return None
        if _presented(request):  # a guess, not a client that has not signed in yet
            self._failed(client)
        return JSONResponse(
            {"detail": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    def sign_in(self, request: Request, given: str | None) -> float | None:
        """Check a token typed into the login form.

        Returns:
            None when it is right; else the seconds this client must wait before its next
            attempt is even compared (0.0 when it may try again at once).
        """
        client = _client(request)
        wait = self._wait(client)
        if wait > 0:
            return wait
        if self.token is None or _same(self.token, given):
            return None
        self._failed(client)
        return 0.0

    def _wait(self, client: str) -> float:
        """Seconds until `client` may try again (0 when it may now)."""
        failures = self._failures.get(client)
        if not failures:
            return 0.0
        now = time.monotonic()
        while failures and failures[0] <= now - FAILURE_WINDOW:
            failures.popleft()
        if len(failures) < FAILURE_LIMIT:
            return 0.0
        return failures[0] + FAILURE_WINDOW - now

    def _failed(self, client: str) -> None:
        failures = self._failures.pop(client, None) or deque(maxlen=FAILURE_LIMIT)
        failures.append(time.monotonic())
        self._failures[client] = failures  # re-inserted: the dict is oldest-first
        if len(self._failures) > _CLIENTS_KEPT:
            del self._failures[next(iter(self._failures))]


def _same(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def _presented(request: Request) -> bool:
    return "authorization" in request.headers or COOKIE in request.cookies


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def _too_many(wait: float) -> JSONResponse:
    seconds = retry_after(wait)
    return JSONResponse(
        {"detail": f"too many wrong tokens from this address: try again in {seconds} s"},
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )


def retry_after(wait: float) -> int:
    """Whole seconds to put in a Retry-After header for a wait of `wait` seconds."""
    return max(int(wait) + 1, 1)


async def not_cross_site(request: Request) -> None:
    """A FastAPI dependency that answers 403 to a state change a browser may send cross-site.

    Another web page can make the operator's browser send a "simple" request (a bodiless or
    form POST) to `conveyor web`, but nothing a browser must first ask CORS permission for.
    So a POST is taken only with a JSON body, a bearer token or an `X-Conveyor` header.
    """
    if request.method in _SAFE_METHODS:
        return
    headers = request.headers
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    scheme = headers.get("authorization", "").partition(" ")[0].lower()
    if media_type == "application/json" or scheme == "bearer" or ACTION_HEADER in headers:
        return
    raise HTTPException(
        403, "send Content-Type: application/json, a bearer token or an X-Conveyor header"
    )
