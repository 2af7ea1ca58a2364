"""The PostgreSQL engine beyond the contract suites: transactional enqueue through each driver a
caller may hold a transaction on, the schema's migration by many processes at once, and a
server restart under a worker process. SIGKILL, SIGTERM and lease renewal are in
`test_engine_crashes.py`, the same tests on every engine.

Each test has a schema of its own (dropped at its end); the restart test runs a `postgres` of
its own. Tests wait on results and rows, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

import conveyor.testing
from conveyor import (
    BrokerConnectionError,
    ConfigurationError,
    PostgresBroker,
    SqliteBroker,
    TaskHandle,
    TaskStatus,
)
from conveyor._urls import safe_url
from conveyor.engines import registry
from conveyor.engines.base import Outgoing
from conveyor.engines.postgres import SCHEMA_VERSION
from tests.integration.test_redis_engine import conveyor as run_cli
from tests.integration.test_redis_engine import ok
from tests.integration.test_worker_processes import assert_succeeded, eventually, numbers, results
from tests.servers import PrivatePostgres, drop_postgres_schema, postgres_url, unique_prefix

if TYPE_CHECKING:
    from conveyor.task import AsyncTask
    from tests.integration.conftest import App, Workers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pg() -> AsyncIterator[PostgresBroker]:
    """A started broker on a schema of its own, with a worker running in this loop."""
    url, schema = postgres_url(), unique_prefix().replace("-", "_")
    broker = PostgresBroker(url, schema=schema, lease_seconds=2.0)

    @broker.task("add")
    async def add(x: int, y: int) -> int:
        return x + y

    await broker.startup()
    async with conveyor.testing.worker(broker):
        yield broker
    await broker.shutdown()
    await drop_postgres_schema(url, schema)


def _add(broker: PostgresBroker) -> AsyncTask[[int, int], int]:
    task = broker.find_task("add")
    assert task is not None
    return task  # type: ignore[return-value]  # registered above as add(x: int, y: int) -> int


# -- 1. transactional enqueue, through every driver ---------------------------------------------

#: Inside = what runs while the transaction is open, given the id of the task sent in it.
Inside = Callable[[str], Coroutine[Any, Any, None]]
InsideSync = Callable[[str], None]
#: Sends `add(1, 2)` in a transaction of one driver, runs `inside` while it is open, then
#: commits (True) or rolls back, and returns the task's handle.
Scenario = Callable[[PostgresBroker, Inside, bool], Awaitable[TaskHandle[int]]]


def _dsn(driver: str = "postgresql") -> str:
    return postgres_url().replace("postgresql://", f"{driver}://", 1)


async def _asyncpg(broker: PostgresBroker, inside: Inside, commit: bool) -> TaskHandle[int]:
    import asyncpg

    conn = await asyncpg.connect(postgres_url())
    try:
        transaction = conn.transaction()
        await transaction.start()
        handle = await _add(broker).kicker().with_connection(conn).kiq(1, 2)
        await inside(handle.task_id)
        await (transaction.commit() if commit else transaction.rollback())
    finally:
        await conn.close()
    return handle


async def _psycopg_async(broker: PostgresBroker, inside: Inside, commit: bool) -> TaskHandle[int]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_url()) as conn:
        handle = await _add(broker).kicker().with_connection(conn).kiq(1, 2)
        await inside(handle.task_id)
        await (conn.commit() if commit else conn.rollback())
    return handle


async def _sqlalchemy_async(
    broker: PostgresBroker, inside: Inside, commit: bool
) -> TaskHandle[int]:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(_dsn("postgresql+asyncpg"))
    try:
        async with AsyncSession(engine) as session:
            handle = await _add(broker).kicker().with_connection(session).kiq(1, 2)
            await inside(handle.task_id)
            await (session.commit() if commit else session.rollback())
    finally:
        await engine.dispose()
    return handle


def _in_thread(sync: Callable[..., TaskHandle[int]]) -> Scenario:
    """A scenario of sync code (as in a Flask or Django view): it runs in a thread without an
    event loop and sends with `kiq_sync`; `inside` is run back on the test's loop."""

    async def scenario(broker: PostgresBroker, inside: Inside, commit: bool) -> TaskHandle[int]:
        loop = asyncio.get_running_loop()

        def inside_sync(task_id: str) -> None:
            asyncio.run_coroutine_threadsafe(inside(task_id), loop).result(30)

        return await asyncio.to_thread(sync, broker, inside_sync, commit)

    return scenario


def _psycopg_sync(broker: PostgresBroker, inside: InsideSync, commit: bool) -> TaskHandle[int]:
    import psycopg

    with psycopg.connect(postgres_url()) as conn:
        handle = _add(broker).kicker().with_connection(conn).kiq_sync(1, 2)
        inside(handle.task_id)
        conn.commit() if commit else conn.rollback()
    return handle.handle


def _sqlalchemy_sync(broker: PostgresBroker, inside: InsideSync, commit: bool) -> TaskHandle[int]:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(_dsn("postgresql+psycopg"))
    try:
        with Session(engine) as session:
            handle = _add(broker).kicker().with_connection(session).kiq_sync(1, 2)
            inside(handle.task_id)
            session.commit() if commit else session.rollback()
    finally:
        engine.dispose()
    return handle.handle


def _django(broker: PostgresBroker, inside: InsideSync, commit: bool) -> TaskHandle[int]:
    from django.db import connection, transaction

    _configure_django()
    try:
        with transaction.atomic():
            handle = _add(broker).kicker().with_connection(connection).kiq_sync(1, 2)
            inside(handle.task_id)
            transaction.set_rollback(not commit)
    finally:
        connection.close()
    return handle.handle


def _configure_django() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    parts = urlsplit(postgres_url())
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "postgres",
                "HOST": parts.hostname,
                "PORT": parts.port or 5432,
            }
        },
        USE_TZ=True,
    )
    django.setup()


DRIVERS: dict[str, Scenario] = {
    "asyncpg": _asyncpg,
    "psycopg-async": _psycopg_async,
    "sqlalchemy-async": _sqlalchemy_async,
    "psycopg-sync": _in_thread(_psycopg_sync),
    "sqlalchemy-sync": _in_thread(_sqlalchemy_sync),
    "django": _in_thread(_django),
}


async def _rows(broker: PostgresBroker) -> int:
    db = broker.transport.db  # type: ignore[attr-defined]  # PostgresTransport
    return int(await db.fetchval(db.sql("SELECT count(*) FROM {s}.messages")))


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("driver", list(DRIVERS))
async def test_a_task_sent_in_a_transaction_exists_only_once_it_commits(
    pg: PostgresBroker, driver: str, commit: bool
) -> None:
    seen_inside: list[object] = []

    async def inside(task_id: str) -> None:
        # The worker runs a task sent after ours, so it has looked at the queue since.
        other = await _add(pg).kiq(20, 22)
        assert (await other.wait_result(timeout=10)).return_value == 42
        seen_inside.extend([await pg.transport.locate(task_id), await _rows(pg)])

    handle = await DRIVERS[driver](pg, inside, commit)
    assert seen_inside == [None, 0]  # invisible while the transaction is open, even to a worker
    if commit:
        result = await handle.wait_result(timeout=10)
        assert result.return_value == 3
        return
    last = await _add(pg).kiq(1, 1)
    assert (await last.wait_result(timeout=10)).return_value == 2
    assert await handle.get_result() is None
    assert await handle.status() is None
    assert await _rows(pg) == 0  # nothing stored


async def test_kiq_many_in_a_transaction(pg: PostgresBroker) -> None:
    import asyncpg

    add = _add(pg)
    conn = await asyncpg.connect(postgres_url())
    try:
        async with conn.transaction():
            handles = await pg.kiq_many([add.s(n, n) for n in range(5)], connection=conn)
            assert await _rows(pg) == 0
    finally:
        await conn.close()
    assert [(await h.wait_result(timeout=10)).return_value for h in handles] == [0, 2, 4, 6, 8]


async def test_with_connection_is_refused_at_the_call_where_it_cannot_work(
    pg: PostgresBroker, tmp_path: Path
) -> None:
    sqlite = SqliteBroker(str(tmp_path / "x.db"))

    @sqlite.task
    async def noop() -> None: ...

    with pytest.raises(
        ConfigurationError, match="sqlite engine cannot enqueue in your transaction"
    ):
        noop.kicker().with_connection(object())
    with pytest.raises(ConfigurationError, match="with_connection takes an asyncpg, psycopg"):
        _add(pg).kicker().with_connection(object())
    with pytest.raises(ConfigurationError, match="sqlite engine"):
        await sqlite.kiq_many([noop.s()], connection=object())


# -- 2. the schema ---------------------------------------------------------------------------------


async def test_many_processes_starting_at_once_migrate_the_schema_once() -> None:
    url, schema = postgres_url(), unique_prefix().replace("-", "_")
    script = (
        "import asyncio, sys\n"
        "from conveyor import PostgresBroker\n"
        f"b = PostgresBroker({url!r}, schema={schema!r})\n"
        "asyncio.run(b.startup()); asyncio.run(b.shutdown())\n"
    )
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE
            )
            for _ in range(6)
        ]
        errors = [(await p.communicate())[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        broker = PostgresBroker(url, schema=schema)
        db = broker.transport.db  # type: ignore[attr-defined]  # PostgresTransport
        rows = await db.fetch(db.sql("SELECT version FROM {s}.version ORDER BY version"))
        assert [r["version"] for r in rows] == [1]
        await broker.shutdown()
    finally:
        await drop_postgres_schema(url, schema)


async def test_a_connection_that_failed_mid_statement_is_not_pooled_again() -> None:
    # An outage can leave a pooled connection mid-operation (asyncpg: "cannot switch to state
    # 12; another operation (2) is in progress"); the pool skips its reset round trip, so the
    # call that saw the failure must close it, and report it in one line like a lost server.
    import asyncpg

    url, schema = postgres_url(), unique_prefix().replace("-", "_")
    broker = PostgresBroker(url, schema=schema)
    db = broker.transport.db  # type: ignore[attr-defined]  # PostgresTransport
    backend = "SELECT pg_backend_pid()"

    async def left_mid_operation(conn: Any) -> None:
        await conn.fetchval("SELECT 1")
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")

    try:
        first = await db.fetchval(backend)
        assert await db.fetchval(backend) == first  # a sound connection is reused
        with pytest.raises(BrokerConnectionError, match=r"^cannot reach PostgreSQL at "):
            await db.call(left_mid_operation)
        assert await db.fetchval(backend) != first  # that one was closed, a new one made
    finally:
        await broker.shutdown()
        await drop_postgres_schema(url, schema)


# -- 3. a server restart under a worker process ------------------------------------------------


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A `postgres` of this test on a free port."""
    server = PrivatePostgres(tmp_path / "pg")
    server.start()
    yield server
    server.stop()
    server.remove()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_postgres_restart_mid_run_loses_no_task(
    private_postgres: PrivatePostgres,
    make_app: Callable[..., Awaitable[App]],
    workers: Workers,
) -> None:
    app = await make_app(url=private_postgres.url)
    worker = workers.start(app, "--max-async-tasks", "4")
    count = 200
    handles = await app.broker.kiq_many([app.module.work.s(n, 0.05) for n in range(count)])
    waiting = asyncio.create_task(results(handles, timeout=60))  # a producer on its results
    await eventually(lambda: len(app.marks("done")) >= 20, 20, "a first part of the tasks done")

    private_postgres.stop()  # a fast shutdown: every connection is cut
    stopped_at = time.monotonic()
    late = asyncio.create_task(results(handles[-10:], timeout=60))  # a wait begun in the outage
    await eventually(lambda: "receive failed" in worker.stderr(), 20, "the worker in the outage")
    assert len(app.marks("done")) < count, "the outage came after the run"
    private_postgres.start()  # the same port and data directory

    found = await waiting
    assert_succeeded(found)
    assert [r.return_value for r in found] == list(range(count))
    assert [r.return_value for r in await late] == list(range(count - 10, count))
    assert set(numbers(app, "done")) == set(range(count))  # each one's effect recorded
    assert worker.proc.poll() is None  # it rode the outage out
    assert "Traceback" not in worker.stderr()  # an outage is a few lines, not tracebacks
    assert await app.broker.transport.queue_stats() == []
    assert await app.broker.transport.dead_letters() == []
    assert time.monotonic() - stopped_at < 60
    after = await (await app.module.add.kiq(2, 3)).wait_result(timeout=15)
    assert after.status is TaskStatus.SUCCEEDED
    assert after.return_value == 5


# -- 4. the CLI ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_cli_shows_the_schema_and_acts_on_postgres_state(
    make_app: Callable[..., Awaitable[App]], workers: Workers
) -> None:
    schema = unique_prefix().replace("-", "_")
    app = await make_app(url=f"{postgres_url()}?schema={schema}")
    try:
        m = app.module
        await app.broker.kiq_many([m.add.s(i, 1) for i in range(3)])
        await m.stamp.kicker().with_delay(300).kiq()
        counts = "default: 3 ready, 1 scheduled, 0 running"
        info = ok(await run_cli(app, "info", app.spec)).splitlines()
        assert f"broker:   PostgresBroker {safe_url(postgres_url())}" in info
        assert f"storage:  schema {schema} (version {SCHEMA_VERSION})" in info
        assert "results:  PostgresResultBackend" in info
        assert f"  {counts}" in info
        assert ok(await run_cli(app, "purge", app.spec)).strip() == "purged 4 message(s)"

        workers.start(app)
        bad = await m.boom.kiq()
        assert (await bad.wait_result(timeout=10)).status is TaskStatus.FAILED
        (letter,) = ok(await run_cli(app, "dlq", "list", app.spec)).splitlines()
        assert letter.startswith(f"{bad.task_id} {m.boom.name} queue=default at "), letter
        ping = ok(await run_cli(app, "ping", app.spec)).splitlines()
        assert ping[1].startswith("round trip through worker "), ping
    finally:
        workers.stop_all()
        await drop_postgres_schema(postgres_url(), schema)


# -- 5. idle consumers wake on NOTIFY ------------------------------------------------------------


async def test_an_idle_consumer_wakes_on_a_commit_elsewhere_not_on_a_poll() -> None:
    """Two engines share nothing in this process but the database: the consumer's wait can
    only end early through PostgreSQL's NOTIFY, sent at the producer's commit."""
    url = f"{postgres_url()}?schema={unique_prefix().replace('-', '_')}"
    consumer, producer = registry.open_url(url), registry.open_url(url)
    assert consumer.transport is not None
    assert producer.transport is not None
    await consumer.transport.startup()
    await producer.transport.startup()
    try:
        for n in range(3):  # every wait ends at once, not at the end of the receive timeout
            waiting = asyncio.create_task(consumer.transport.receive(["q"], 1, 10.0))
            await asyncio.sleep(0.2)  # the consumer is asleep in its wait (no row is due)
            assert not waiting.done()
            sent = time.monotonic()
            await producer.transport.publish([Outgoing(f"t{n}", "q", b"x")])
            (got,) = await asyncio.wait_for(waiting, 5)
            assert time.monotonic() - sent < 0.3  # polling without NOTIFY looks every 0.5 s
            assert got.task_id == f"t{n}"
            await consumer.transport.ack([got])
    finally:
        await consumer.transport.shutdown()
        await producer.transport.shutdown()
        server, _, query = url.partition("?")
        await drop_postgres_schema(server, query.removeprefix("schema="))
