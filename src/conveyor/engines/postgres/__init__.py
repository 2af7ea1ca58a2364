"""The PostgreSQL engine (`postgresql://user:password@host:5432/db`, or `postgres://`):
messages, state and results in tables of one schema of the application's own database, and
transactional enqueue through the caller's connection. `docs/engines/postgres.md` describes
the tables, the driver and the guarantees.

`open_engine` wires one `PgDb` (one asyncpg pool per event loop) shared by the transport, the
state store and the result store.
"""

from __future__ import annotations

from conveyor._urls import float_option, split_options
from conveyor.engines.base import DEFAULT_LEASE_SECONDS, Engine
from conveyor.engines.postgres.db import SCHEMA_VERSION, PgDb
from conveyor.engines.postgres.results import PostgresResultBackend
from conveyor.engines.postgres.store import PostgresStore
from conveyor.engines.postgres.transport import PostgresTransport

__all__ = [
    "SCHEMA_VERSION",
    "PgDb",
    "PostgresResultBackend",
    "PostgresStore",
    "PostgresTransport",
    "open_engine",
]


def open_engine(
    url: str,
    *,
    schema: str | None = "conveyor",
    lease_seconds: float | None = None,
    result_ttl: float | None = 24 * 3600.0,
) -> Engine:
    """The transport, state store and result store of one app in a PostgreSQL database.

    The URL's `?schema=` and `?lease=` win over `schema` and `lease_seconds`
    (`DEFAULT_LEASE_SECONDS` when neither says); its other options go to the driver.

    Raises:
        ConfigurationError: a malformed URL, schema name or lease.
    """
    url, query = split_options(url, ("schema", "lease"))
    lease = float_option(query, "lease", url) or lease_seconds or DEFAULT_LEASE_SECONDS
    db = PgDb(url, query.get("schema") or schema or "conveyor")
    results = PostgresResultBackend(db, default_ttl=result_ttl)
    transport = PostgresTransport(db, lease_seconds=lease, results=results)
    return Engine(transport, PostgresStore(db), results)
