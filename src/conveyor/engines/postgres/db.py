"""The connections of the PostgreSQL engine: one asyncpg pool per event loop, one listening
connection per loop that wants wake-ups, the schema migrated on first use, errors mapped.

Invariants:
* Every statement goes through `PgDb.call`, so a lost or unreachable server is always a
  `BrokerConnectionError` naming the URL without its password, and any other database error a
  `BrokerError`.
* The schema is created and migrated once per process, under a transaction-scoped advisory
  lock, so many processes starting at once apply each migration exactly once.
* A pooled connection is handed back without a reset round trip (`_keep_session`): nothing
  run through `call` may leave session state (SET, LISTEN, session advisory locks), and one
  whose statement failed for want of a connection is closed, never pooled again.
* A listening connection that dies (a server restart) is opened again on the next wait; until
  then waiters fall back to polling, so a lost notification costs latency, never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final, TypeVar

from conveyor._urls import safe_url
from conveyor.engines.loops import PerLoop, Signal
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError
from conveyor.logs import named_line

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the PostgreSQL engine needs the postgres extra: pip install 'conveyor[postgres]'"
    ) from exc

__all__ = ["NOW", "SCHEMA_VERSION", "Conn", "PgDb", "Record"]

log = logging.getLogger("conveyor.postgres")
T = TypeVar("T")
Record = asyncpg.Record
#: A connection as `PgDb.call` hands it out (from a pool) or as `asyncpg.connect` makes it.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

#: The server's clock in unix seconds, as every statement compares times.
NOW: Final = "extract(epoch from clock_timestamp())::float8"
#: Migrations in `sql/`, applied in order; the schema's version is how many have run.
_MIGRATIONS: Final = ("001_init.sql",)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,46}")
#: Errors of a server that is away, restarting, refusing or out of connections.
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InternalClientError,  # a connection left mid-operation by an outage
)
_POOL_SIZE = 10
_POLL_WITHOUT_LISTENER = 0.5
#: `vacuum_soon`: messages settled before a vacuum while busy, or once the queue is empty; and
#: the shortest time between two vacuums of one process.
_VACUUM_BUSY, _VACUUM_IDLE, _VACUUM_EVERY = 5_000, 500, 1.0


def check_schema(name: str) -> str:
    """`name` when it is a schema name conveyor may create (lower case, digits, underscores).

    Raises:
        ConfigurationError: it is not.
    """
    if not _SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"schema {name!r}: use lower-case letters, digits and underscores (at most 47)"
        )
    return name


class _Loop:
    """What one event loop holds: its pool, its listening connection and its waiters."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self.opening: asyncio.Future[asyncpg.Pool] | None = None
        self.listener: asyncpg.Connection | None = None
        self.listening: asyncio.Future[bool] | None = None
        self.done_waiters: dict[str, set[Callable[[], None]]] = {}

    async def close(self) -> None:
        listener, pool, self.listener, self.pool = self.listener, self.pool, None, None
        for conn in (listener, pool):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)


class PgDb:
    """One database as the engine's parts share it.

    Args:
        url: `postgresql://user:password@host:5432/db` (the driver's URL, conveyor's own query
            options removed).
        schema: the schema holding conveyor's tables.
    """

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.safe_url = safe_url(url)
        self.schema = check_schema(schema)
        self.queued_channel = f"{schema}.queued"
        self.done_channel = f"{schema}.done"
        #: Notified whenever messages may have become ready (a NOTIFY, or a local publish).
        self.queued = Signal()
        #: The statements of `sql/queries.sql`, by name, for this schema.
        self.q = {name: self.sql(text) for name, text in _queries().items()}
        self._loops = PerLoop(lambda loop: _Loop(), _Loop.close)
        self._migrated = False
        self._last_sweep = time.monotonic()
        self._settled = 0
        self._next_vacuum = 0.0
        self._vacuuming: asyncio.Task[None] | None = None

    def sql(self, statement: str) -> str:
        """`statement` with `{s}` naming the schema (quoted) and `{now}` the server's clock."""
        return statement.replace("{s}", f'"{self.schema}"').replace("{now}", NOW)

    # -- calls ----------------------------------------------------------------------------------

    async def call(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` with a pooled connection of this loop, errors mapped."""
        try:
            pool = await self._pool()
            async with pool.acquire() as conn:
                try:
                    return await fn(conn)
                except _CONNECTION_ERRORS:
                    # lost, or in a state asyncpg cannot go on from: `_keep_session` sends no
                    # statement that would find out, so the pool must not hand it out again
                    conn.terminate()
                    raise
        except (BrokerError, ConfigurationError):
            raise
        except _CONNECTION_ERRORS as exc:
            raise self.unreachable(exc) from None
        except asyncpg.PostgresError as exc:
            raise BrokerError(f"PostgreSQL at {self.safe_url} failed: {named_line(exc)}") from exc

    async def fetch(self, statement: str, *args: Any) -> list[Record]:
        """The rows of one statement."""
        return await self.call(lambda conn: conn.fetch(statement, *args))

    async def fetchval(self, statement: str, *args: Any) -> Any:
        """The first column of the first row of one statement (None without a row)."""
        return await self.call(lambda conn: conn.fetchval(statement, *args))

    async def execute(self, statement: str, *args: Any) -> str:
        """Run one statement; its status line (`DELETE 3`)."""
        return await self.call(lambda conn: conn.execute(statement, *args))

    async def executemany(self, statement: str, args: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per argument tuple, in one transaction."""
        await self.call(lambda conn: conn.executemany(statement, args))

    def unreachable(self, exc: BaseException) -> BrokerConnectionError:
        """The one-line error of a server that cannot be reached."""
        return BrokerConnectionError(
            f"cannot reach PostgreSQL at {self.safe_url}: {named_line(exc)}"
        )

    # -- connections ----------------------------------------------------------------------------

    async def _pool(self) -> asyncpg.Pool:
        here = self._loops.here()
        if here.pool is not None:
            return here.pool
        if here.opening is None or here.opening.done():
            here.opening = asyncio.ensure_future(self._open_pool())
        here.pool = await asyncio.shield(here.opening)
        return here.pool

    async def _open_pool(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.url,
            min_size=0,  # no floor: asyncpg would reconnect it in the background through an
            # outage, logging a traceback per try; connections are made as they are needed
            max_size=_POOL_SIZE,
            timeout=5,
            command_timeout=60,
            reset=_keep_session,
        )
        if not self._migrated:
            try:
                async with pool.acquire() as conn:
                    await self._migrate(conn)
            except BaseException:
                await pool.close()
                raise
            self._migrated = True
        return pool

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"conveyor:{self.schema}"
            )
            await conn.execute(self.sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            await conn.execute(self.sql("CREATE TABLE IF NOT EXISTS {s}.version (version int)"))
            version = await conn.fetchval(self.sql("SELECT max(version) FROM {s}.version")) or 0
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"schema {self.schema!r} at {self.safe_url} is at version {version}, newer"
                    f" than this conveyor's {SCHEMA_VERSION}: upgrade conveyor"
                )
            folder = resources.files("conveyor.engines.postgres") / "sql"
            for number, name in enumerate(_MIGRATIONS[version:], start=version + 1):
                script = (folder / name).read_text().replace("{schema}", self.schema)
                await conn.execute(script)
                await conn.execute(self.sql("INSERT INTO {s}.version VALUES ($1)"), number)
                log.info("PostgreSQL schema %r migrated to version %d", self.schema, number)

    async def version(self) -> int:
        """The schema's version, migrating it first."""
        return int(await self.fetchval(self.q["version"]))

    async def close(self) -> None:
        """Close every loop's connections."""
        await self._loops.close_all()

    # -- notifications --------------------------------------------------------------------------

    async def listening(self) -> bool:
        """Make sure this loop listens for notifications; False when it cannot now."""
        here = self._loops.here()
        if here.listener is not None and not here.listener.is_closed():
            return True
        if here.listening is None or here.listening.done():  # one attempt for every caller
            here.listening = asyncio.ensure_future(self._listen(here))
        return await asyncio.shield(here.listening)

    async def _listen(self, here: _Loop) -> bool:
        try:
            conn = await asyncpg.connect(self.url, timeout=5)
        except Exception as exc:  # the server is away: poll until it is back
            log.debug("cannot listen on %s: %s", self.safe_url, exc)
            return False
        try:
            await conn.add_listener(self.queued_channel, self._on_queued)
            await conn.add_listener(self.done_channel, functools.partial(_announce_done, here))
        except Exception as exc:
            log.debug("cannot listen on %s: %s", self.safe_url, exc)
            conn.terminate()
            return False
        here.listener = conn
        self.queued.notify()  # what was announced while nobody listened is looked at now
        return True

    def poll_pause(self, listening: bool, pause: float) -> float:
        """How long a waiter may sleep between looks, given whether it is listening."""
        return pause if listening else min(pause, _POLL_WITHOUT_LISTENER)

    def _on_queued(self, *_: object) -> None:
        self.queued.notify()

    async def watch_done(
        self, task_id: str, wake: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Have `wake()` called when a result of `task_id` is announced in this loop."""
        if not await self.listening():
            return None
        waiters = self._loops.here().done_waiters
        waiters.setdefault(task_id, set()).add(wake)

        async def unwatch() -> None:
            found = waiters.get(task_id)
            if found is not None:
                found.discard(wake)
                if not found:
                    del waiters[task_id]

        return unwatch

    # -- housekeeping ---------------------------------------------------------------------------

    def vacuum_soon(self, settled: int, *, idle: bool = False) -> None:
        """Count `settled` messages deleted or moved; vacuum `messages` in the background after
        `_VACUUM_BUSY` of them, or `_VACUUM_IDLE` once the queue is found empty (`idle`), at
        most once per `_VACUUM_EVERY` seconds and one at a time in this process.

        Each task leaves two dead row versions (its claim and its ack), and autovacuum looks at
        a table at most once per `autovacuum_naptime` (a server setting, a minute by default):
        meanwhile a busy queue's table and indexes grow, and every claim walks the dead rows.
        """
        self._settled += settled
        if self._settled < (_VACUUM_IDLE if idle else _VACUUM_BUSY):
            return
        if time.monotonic() < self._next_vacuum or not (
            self._vacuuming is None or self._vacuuming.done()
        ):
            return
        self._settled, self._next_vacuum = 0, time.monotonic() + _VACUUM_EVERY
        self._vacuuming = asyncio.ensure_future(self._vacuum())

    async def _vacuum(self) -> None:
        try:
            await self.execute(self.q["vacuum"])
        except BrokerError as exc:
            log.debug("%s: could not vacuum: %s", self.safe_url, exc)

    async def sweep_now_and_then(self, interval: float = 60.0) -> None:
        """Delete expired rows of every table, at most once per `interval` in this process."""
        now = time.monotonic()
        if now - self._last_sweep < interval:
            return
        self._last_sweep = now
        try:
            await self.execute(self.q["sweep"])
        except BrokerError as exc:
            log.warning("%s: could not delete expired rows: %s", self.safe_url, exc)


@functools.cache
def _queries() -> dict[str, str]:
    """`sql/queries.sql` split at its `-- name:` lines."""
    text = (resources.files("conveyor.engines.postgres") / "sql" / "queries.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


async def _keep_session(conn: Conn) -> None:
    """A released connection keeps its session: the engine's statements leave none behind (their
    locks are transaction-scoped, listening has a connection of its own), so asyncpg's default
    reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) is a round trip for
    nothing after every statement. An open transaction is still rolled back by asyncpg."""


def _announce_done(here: _Loop, _conn: object, _pid: int, _channel: str, task_id: str) -> None:
    for wake in list(here.done_waiters.get(task_id, ())):
        wake()
