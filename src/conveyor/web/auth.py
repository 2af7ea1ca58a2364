"""Bearer-token authentication for every route but `/tasks/health`.

API clients send `Authorization: Bearer <token>`. A browser opens the dashboard once at
`/?token=<token>`, which stores the token in an HTTP-only, same-site cookie.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

__all__ = ["COOKIE", "UNAUTHORIZED", "Detail", "Guard", "guard", "request_token", "token_matches"]

COOKIE = "conveyor_token"

Guard = Callable[..., Awaitable[None]]


class Detail(BaseModel):
    """An error answer."""

    detail: Any = Field(description="a message, or FastAPI's list of validation errors")


#: The answers every guarded route documents.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    400: {"model": Detail, "description": "the body is not JSON"},
    401: {"model": Detail, "description": "missing or wrong bearer token"},
    422: {"model": Detail, "description": "the request does not fit"},
}

_bearer = HTTPBearer(auto_error=False, description="the token of `conveyor web --token`")


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
