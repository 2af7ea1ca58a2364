"""Transactional enqueue: messages inserted through the caller's own connection, so they exist
only if the caller's transaction commits (the insert trigger's NOTIFY is sent at that commit).

One INSERT of five arrays serves every driver; only its parameter style differs. The caller's
connection may be asyncpg's, psycopg's (sync or async), SQLAlchemy's (`Session`, `Connection`
and their async twins) or Django's; it is recognised by its class's package, never imported
here unless the caller already has it loaded.

Invariants: a connection is resolved in the caller's thread when `transactional` is called, so
Django's per-thread `connection` proxy names the caller's connection although the send runs on
another thread; a sync connection is used from a thread without an event loop (`to_thread`),
so it never blocks one and Django allows it (its use from that thread is allowed for the insert
only: the caller waits for it, so nobody else uses the connection meanwhile).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from conveyor.engines.base import Outgoing, Publisher
from conveyor.errors import BrokerError, ConfigurationError

__all__ = ["bind", "columns"]

#: The INSERT's parameters in each parameter style but asyncpg's ($1 ... $5).
_STYLES: Final = {
    "pyformat": ("%s",) * 5,
    "named": (":task_ids", ":queues", ":priorities", ":bodies", ":etas"),
}
_NAMES: Final = ("task_ids", "queues", "priorities", "bodies", "etas")
_DRIVERS: Final = "an asyncpg, psycopg, SQLAlchemy or Django connection"


def _styled(insert: str, style: str) -> str:
    for n, param in enumerate(_STYLES[style], start=1):
        insert = insert.replace(f"${n}", param)
    return insert


def columns(messages: Sequence[Outgoing]) -> tuple[list[Any], ...]:
    """The five arrays the INSERT takes."""
    return (
        [m.task_id for m in messages],
        [m.queue for m in messages],
        [m.priority for m in messages],
        [m.body for m in messages],
        [m.eta for m in messages],
    )


def bind(connection: object, insert: str) -> Publisher:
    """A publisher that inserts through `connection`, inside its open transaction, with the
    `insert` statement of `sql/queries.sql`.

    Raises:
        ConfigurationError: `connection` is not a connection this engine can use.
    """
    kind = type(connection).__module__.split(".")[0]
    is_async = type(connection).__name__.startswith("Async")
    if kind == "asyncpg":
        return _asyncpg(connection, insert)
    if kind == "psycopg":
        return _dbapi(connection, _styled(insert, "pyformat"), is_async)
    if kind == "sqlalchemy":
        return _sqlalchemy(connection, _styled(insert, "named"), is_async)
    if kind == "django":
        return _django(connection, _styled(insert, "pyformat"))
    raise ConfigurationError(
        f"with_connection takes {_DRIVERS}, not {type(connection).__qualname__}"
    )


def _asyncpg(conn: Any, sql: str) -> Publisher:
    async def publish(messages: Sequence[Outgoing]) -> None:
        await _guard(conn.execute(sql, *columns(messages)))

    return publish


def _dbapi(conn: Any, sql: str, is_async: bool) -> Publisher:
    async def publish(messages: Sequence[Outgoing]) -> None:
        if is_async:
            await _guard(conn.execute(sql, columns(messages)))
        else:
            await _in_thread(conn.execute, sql, columns(messages))

    return publish


def _sqlalchemy(session: Any, sql: str, is_async: bool) -> Publisher:
    text = sys.modules["sqlalchemy"].text(sql)

    async def publish(messages: Sequence[Outgoing]) -> None:
        params = dict(zip(_NAMES, columns(messages), strict=True))
        if is_async:
            await _guard(session.execute(text, params))
        else:
            await _in_thread(session.execute, text, params)

    return publish


def _django(proxy: Any, sql: str) -> Publisher:
    wrapper = getattr(proxy, "_connections", None)  # the per-thread proxy: resolve it here
    conn = wrapper[proxy._alias] if wrapper is not None else proxy
    if getattr(conn, "vendor", None) != "postgresql":
        raise ConfigurationError(f"with_connection needs a PostgreSQL database, not {conn.vendor}")

    def insert(messages: Sequence[Outgoing]) -> None:
        conn.inc_thread_sharing()  # the caller's thread waits for this send: no two users
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, columns(messages))
        finally:
            conn.dec_thread_sharing()

    async def publish(messages: Sequence[Outgoing]) -> None:
        await _in_thread(insert, messages)

    return publish


async def _guard(pending: Awaitable[Any]) -> None:
    try:
        await pending
    except Exception as exc:
        raise _failed(exc) from exc


async def _in_thread(fn: Callable[..., Any], *args: Any) -> None:
    try:
        await asyncio.to_thread(fn, *args)
    except Exception as exc:
        raise _failed(exc) from exc


def _failed(exc: Exception) -> BrokerError:
    text = " ".join(str(exc).split())[:300]
    return BrokerError(
        f"enqueue through the caller's connection failed: {type(exc).__name__}: {text}"
    )
