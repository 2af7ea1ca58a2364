"""One SQLite file shared by the SQLite engine's transport, state store and result store.

A `SqliteDb` owns one connection and the one thread that uses it: every sqlite3 call runs on
that thread, never on the event loop. Many processes may open the same file at once: the file
is in WAL mode (readers never block the writer), writes take the lock up front with
`BEGIN IMMEDIATE` and stay short, and a busy timeout plus a few retries absorb contention. No
checkpoint runs on that thread: a `Checkpointer` thread copies the WAL back (`checkpoint`).

The schema of all three is `schema.sql`, created here, so any of them can create the file
first; `PRAGMA user_version` records its version, and a file of version 1 is migrated in
place. A new file is made with incremental auto-vacuum: the sweeper, never a call per task,
deletes expired rows and then gives free pages back and has the checkpointer truncate the WAL
(`space`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from conveyor.engines.loops import reset_after_fork
from conveyor.engines.sqlite import space
from conveyor.engines.sqlite.checkpoint import Checkpointer
from conveyor.errors import BrokerConnectionError, BrokerError

__all__ = [
    "LIVE",
    "SCHEMA_VERSION",
    "SqliteClient",
    "SqliteDb",
    "expiry",
    "get_value",
    "immediate",
    "marks",
    "put_value",
    "rowcount",
]

T = TypeVar("T")

#: Version of the tables of `schema.sql`, kept in `PRAGMA user_version`.
SCHEMA_VERSION = 2

#: Tables of expiring values by key: the state store's `kv`, and results and progress reports
#: by task id.
_VALUE_TABLES = ("kv", "results", "progress")

#: The statements of `schema.sql`, in order.
_SCHEMA = tuple(
    statement.strip()
    for statement in resources.files(__package__).joinpath("schema.sql").read_text().split(";")
    if statement.strip()
)

#: From version 1: cancel requests and task states moved to the state store's `kv`, sets from
#: `kv` rows to their own tables (a version-1 `messages.retrying` column is left unused).
_FROM_VERSION_1 = (
    "DROP TABLE IF EXISTS cancels",
    "DROP TABLE IF EXISTS task_state",
    "DELETE FROM kv WHERE key >= '\x1e' AND key < '\x1f'",
)

# Rows whose time is up; run now and then, never on every call.
_SWEEPS = (
    *(f"DELETE FROM {table} WHERE expires_at <= ?1" for table in _VALUE_TABLES),
    "DELETE FROM rates WHERE at + period <= ?1",
    "DELETE FROM set_members WHERE key IN (SELECT key FROM sets WHERE expires_at <= ?1)",
    "DELETE FROM sets WHERE expires_at <= ?1",
    "DELETE FROM stream_items"
    " WHERE task_id IN (SELECT task_id FROM streams WHERE expires_at <= ?1)",
    "DELETE FROM streams WHERE expires_at <= ?1",
)

_BUSY_RETRIES = 4
#: The WAL is cut back to this size when it restarts after a checkpoint: one run that could not
#: checkpoint (a reader in the way) does not keep its size for good.
_WAL_LIMIT_BYTES = 8 << 20


#: The condition of a row with an `expires_at` that has not expired, given the time.
LIVE = "(expires_at IS NULL OR expires_at > ?)"


def marks(n: int) -> str:
    """`n` comma-separated parameter marks, for `IN (...)`."""
    return ", ".join("?" * n)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def expiry(ttl: float | None, now: float) -> float | None:
    """Return the unix time a value with this `ttl` expires at, None for never."""
    return None if ttl is None else now + ttl


def put_value(
    conn: sqlite3.Connection, table: str, key: str, value: bytes, ttl: float | None
) -> None:
    """Store `value` under `key` in one of the value tables, replacing any earlier one."""
    conn.execute(
        f"INSERT OR REPLACE INTO {table} (key, value, expires_at) VALUES (?, ?, ?)",
        (key, value, expiry(ttl, time.time())),
    )


def get_value(conn: sqlite3.Connection, table: str, key: str) -> bytes | None:
    """Return the live value under `key` in one of the value tables, or None."""
    row = conn.execute(
        f"SELECT value FROM {table} WHERE key = ? AND {LIVE}", (key, time.time())
    ).fetchone()
    return None if row is None else bytes(row[0])


def rowcount(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> int:
    """Run one statement; return how many rows it changed."""
    return int(conn.execute(sql, params).rowcount)


def _retry_busy(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    # The busy timeout covers most waits; this covers the cases SQLite reports at once.
    for attempt in range(_BUSY_RETRIES - 1):
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "locked" not in text and "busy" not in text:
                raise
            time.sleep(min(0.005 * 2**attempt, 0.25))
    return fn(conn)  # the last attempt: what it raises, the caller sees


def _create_schema(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this conveyor supports ({SCHEMA_VERSION})"
        )
    with immediate(conn):
        if version == 1:
            for statement in _FROM_VERSION_1:
                conn.execute(statement)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _sweep(conn: sqlite3.Connection) -> None:
    now = time.time()
    with immediate(conn):
        for statement in _SWEEPS:
            conn.execute(statement, (now,))


class SqliteDb:
    """A connection to one SQLite file, used only from its own thread.

    The transport and the result backend each make one by default; pass the same instance to
    both (`db=`) to share one connection and thread. It opens on first use, and `close` releases
    it once every user that called `open` has called `close`.

    Args:
        path: the database file; created when missing (its directory must exist).
        busy_timeout: seconds a statement waits for another process's write lock.
        sweep_interval: seconds between two sweeps of expired rows by this process, each
            followed by giving free space back.
    """

    def __init__(
        self, path: str, *, busy_timeout: float = 30.0, sweep_interval: float = 60.0
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.sweep_interval = sweep_interval
        self.safe_url = f"sqlite:///{path}"
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._changes = 0
        self._executor: ThreadPoolExecutor | None = None
        #: The transport, store and result store that opened the file and have not closed it.
        self.users: set[object] = set()
        self._last_sweep = time.monotonic()
        reset_after_fork(self._after_fork)

    async def open(self, user: object) -> None:
        """Count `user` in (again changes nothing), open the file and create the tables; raise
        `BrokerConnectionError` when it cannot."""
        if user in self.users:
            return
        self.users.add(user)
        try:
            await self.run(lambda conn: None)
        except BaseException:
            await self.close(user)
            raise

    async def close(self, user: object) -> None:
        """Count `user` out; the last one closes the connection and stops the thread."""
        if user not in self.users:
            return
        self.users.discard(user)
        if self.users or self._executor is None:
            return
        executor = self._thread()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)
            self._executor = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Call `fn(connection)` on the database thread and return what it returns."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread(), self._call, fn)
        except sqlite3.Error as exc:
            raise BrokerError(f"SQLite operation failed on {self.safe_url}: {exc}") from exc

    async def sweep_now_and_then(self) -> None:
        """Delete expired rows of every table and give free space back, at most once per
        `sweep_interval`."""
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            await self.run(_sweep)
            await space.give_back(self)

    def truncate_wal(self) -> None:
        """Have the checkpointer truncate the WAL to zero bytes within a period, on its thread."""
        if self._checkpointer is not None:  # a memory database has no WAL
            self._checkpointer.truncate()

    # -- on the database thread ---------------------------------------------------------------

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        try:
            return _retry_busy(fn, self._conn)
        finally:
            if self._checkpointer and self._conn.total_changes != self._changes:
                self._changes = self._conn.total_changes
                self._checkpointer.wrote()

    def _connect(self) -> sqlite3.Connection:
        try:
            # `timeout` sets the busy timeout: no `PRAGMA busy_timeout` needed.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._cannot_open(exc) from None
        try:
            # Before WAL mode: only a file without pages takes it (an older one is converted
            # by `space.give_back`); on any other file it changes nothing.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = _retry_busy(lambda c: c.execute("PRAGMA journal_mode = WAL").fetchone(), conn)
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
            _retry_busy(_create_schema, conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._cannot_open(exc) from None
        if mode[0] == "wal":  # not for a memory database
            self._checkpointer = Checkpointer(self.path)
        return conn

    def _cannot_open(self, exc: sqlite3.Error) -> BrokerConnectionError:
        return BrokerConnectionError(f"cannot open SQLite database {self.path!r}: {exc}")

    def _disconnect(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- on the event loop --------------------------------------------------------------------

    def _after_fork(self) -> list[object]:
        """In a forked child: the parent's thread is gone and its connection is not ours (it
        is kept, never used or closed)."""
        inherited: list[object] = [self._conn, self._checkpointer]
        self._conn, self._checkpointer, self._executor = None, None, None
        return inherited

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="conveyor-sqlite")
        return self._executor


class SqliteClient:
    """What the SQLite transport, state store and result store share: a `SqliteDb`, opened on
    first use."""

    def __init__(
        self, path: str, *, busy_timeout: float = 30.0, db: SqliteDb | None = None
    ) -> None:
        self.path = path
        self.safe_url = f"sqlite:///{path}"
        self._db = db or SqliteDb(path, busy_timeout=busy_timeout)

    async def startup(self) -> None:
        """Open the file and create the tables; raise `BrokerConnectionError` when it cannot."""
        await self._db.open(self)

    async def shutdown(self) -> None:
        """Release this user's share of the file (the connection closes with its last user)."""
        await self._db.close(self)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self not in self._db.users:
            await self.startup()
        return await self._db.run(lambda conn: fn(conn, *args))
