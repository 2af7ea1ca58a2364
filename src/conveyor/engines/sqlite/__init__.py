"""The SQLite engine (`sqlite:///relative.db`, `sqlite:////absolute/path.db`), the embedded
default: queues, state and results in one WAL-mode file shared by many processes, no server."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from conveyor._urls import float_option, safe_url
from conveyor.engines.base import DEFAULT_LEASE_SECONDS, Engine
from conveyor.engines.sqlite.db import SqliteDb
from conveyor.engines.sqlite.results import SqliteResultBackend
from conveyor.engines.sqlite.store import SqliteStore
from conveyor.engines.sqlite.transport import SqliteTransport
from conveyor.errors import ConfigurationError

__all__ = ["SqliteResultBackend", "SqliteStore", "SqliteTransport", "open_engine"]


def _path_of(url: str) -> tuple[str, dict[str, str]]:
    """The file a `sqlite:///` URL names, and its query options.

    Raises:
        ConfigurationError: the URL names a host or no file.
    """
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"{safe_url(url)!r} names a host: use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"{url!r} names no file: use sqlite:///conveyor.db")
    return path, dict(parse_qsl(parts.query))


def open_engine(
    url: str,
    *,
    path: str | None = None,
    lease_seconds: float | None = None,
    result_ttl: float | None = 24 * 3600.0,
    poll_interval: float = 0.05,
    busy_timeout: float = 30.0,
    sweep_interval: float = 60.0,
) -> Engine:
    """The transport, state store and result store of one file, sharing one connection.

    `path` names the file instead of the URL; the URL's `?lease=` wins over `lease_seconds`.
    Every `sweep_interval` seconds, a process in use deletes expired rows and gives free pages
    and the WAL back to the file system.

    Raises:
        ConfigurationError: a malformed URL or option.
    """
    query: dict[str, str] = {}
    if path is None:
        path, query = _path_of(url)
    lease = float_option(query, "lease", url) or lease_seconds or DEFAULT_LEASE_SECONDS
    db = SqliteDb(path, busy_timeout=busy_timeout, sweep_interval=sweep_interval)
    results = SqliteResultBackend(path, default_ttl=result_ttl, db=db)
    transport = SqliteTransport(
        path, lease_seconds=lease, poll_interval=poll_interval, db=db, results=results
    )
    return Engine(transport, SqliteStore(path, db=db), results)
