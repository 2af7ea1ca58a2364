"""Who may use the web routes: a bearer token, and no state change from another site.

API clients send `Authorization: Bearer <token>`. A browser signs in once through the form at
`/` (a POST, so the token is in no URL and no access log), which stores the token in an
HTTP-only, same-site cookie.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

__all__ = [
    "ACTION_HEADER",
    "COMMON_ANSWERS",
    "COOKIE",
    "TOKEN_ENV",
    "Detail",
    "Guard",
    "guard",
    "not_cross_site",
    "request_token",
    "resolve_token",
    "token_matches",
]

COOKIE = "conveyor_token"
TOKEN_ENV = "CONVEYOR_WEB_TOKEN"
#: The header the dashboard's script sends with its actions.
ACTION_HEADER = "x-conveyor"

Guard = Callable[..., Awaitable[None]]


class Detail(BaseModel):
    """An error answer."""

    detail: Any = Field(description="a message, or FastAPI's list of validation errors")


#: The error answers every guarded route documents.
COMMON_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": Detail, "description": "the body is not JSON"},
    401: {"model": Detail, "description": "missing or wrong bearer token"},
    403: {"model": Detail, "description": "a state change that could come from another site"},
    422: {"model": Detail, "description": "the request does not fit"},
    503: {"model": Detail, "description": "the broker is unreachable"},
}

_bearer = HTTPBearer(auto_error=False, description="the token of `conveyor web --token`")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def resolve_token(token: str | None) -> str | None:
    """`token`, else `CONVEYOR_WEB_TOKEN`; None (no authentication) when neither is set."""
    return token or os.environ.get(TOKEN_ENV) or None


def token_matches(token: str | None, given: str | None) -> bool:
    """True when no token is configured or `given` is it (compared in constant time)."""
    if token is None:
        return True
    return given is not None and hmac.compare_digest(token.encode(), given.encode())


def request_token(request: Request) -> str | None:
    """The token a request carries: its bearer header, else the dashboard's cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.cookies.get(COOKIE)


def guard(token: str | None) -> Guard:
    """A FastAPI dependency that answers 401 unless the request carries `token`."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(_bearer),  # noqa: B008
    ) -> None:
        del credentials  # declared so that OpenAPI shows the scheme; read with the cookie below
        if not token_matches(token, request_token(request)):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


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
