"""Broker and store URLs: their secrets hidden for logs and errors, and the query options that
conveyor reads itself split off before a driver sees the URL.

Low in the layers: every engine module may import it (none imports `conveyor.brokers`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from conveyor.errors import ConfigurationError

__all__ = ["float_option", "local_file", "safe_url", "split_options"]

#: Query options every engine reads itself: the key/stream/queue prefix and the lease.
COMMON_OPTIONS = ("prefix", "lease")


def safe_url(url: str) -> str:
    """`url` for logs and errors: its password, or a bare token (`nats://token@host`), query
    options named like a secret (`?password=`, `?token=`) and the secrets of any URL in its
    query (`?state=redis://:pw@host`) replaced by `***`."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{hosts}"
        elif parts.scheme in _TOKEN_SCHEMES:  # nats://TOKEN@host: the user part is the secret
            netloc = f"***@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    hidden = [(k, _safe_option(k, v)) for k, v in pairs]
    if hidden != pairs:
        query = urlencode(hidden, safe=":/@*,")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # geturl() would also drop the empty authority of sqlite:///x.db
    return parts._replace(netloc=netloc, query=query).geturl()


#: Schemes whose user part alone is a credential (a token), not a user name.
_TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def _safe_option(name: str, value: str) -> str:
    if any(word in name.lower() for word in ("password", "passwd", "token", "secret")):
        return "***"
    return safe_url(value) if "://" in value else value


def split_options(url: str, names: Iterable[str] = COMMON_OPTIONS) -> tuple[str, dict[str, str]]:
    """`url` without the query options `names`, and those options' values."""
    ours = set(names)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = urlencode([(k, v) for k, v in query if k not in ours])
    return parts._replace(query=kept).geturl(), {k: v for k, v in query if k in ours}


def float_option(query: Mapping[str, str], name: str, url: str) -> float | None:
    """The number a URL's query option `name` holds, or None when absent.

    Raises:
        ConfigurationError: it is not a number (the URL shown with its secrets hidden).
    """
    if name not in query:
        return None
    try:
        return float(query[name])
    except ValueError:
        raise ConfigurationError(
            f"{name}={query[name]!r} in {safe_url(url)!r} is not a number"
        ) from None


def local_file(url: str) -> str | None:
    """The absolute path of the file a `sqlite:` URL names, else None.

    `sqlite:///relative.db` is relative to the current directory of each process that opens it
    (a worker started in another directory opens another file); `sqlite:////abs/path.db` is
    absolute. Logs show the resolved path so the two cannot be confused.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        return None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)
