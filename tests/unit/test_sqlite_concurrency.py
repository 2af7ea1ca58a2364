"""The SQLite engine with several processes on one file, and its startup errors."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

import conveyor
from conveyor.engines.base import Engine, Outgoing
from conveyor.engines.sqlite import SqliteResultBackend, SqliteStore, SqliteTransport, open_engine
from conveyor.engines.sqlite.db import SCHEMA_VERSION, SqliteDb
from conveyor.errors import BrokerConnectionError

pytestmark = pytest.mark.timeout(60)

# Claims and acks until told that everything is published and a receive comes back empty;
# prints each acked task id.
CONSUMER = """
import asyncio, sys
from conveyor.engines.sqlite import open_engine

async def main(path, name):
    engine = open_engine("sqlite://", path=path, lease_seconds=30.0, poll_interval=0.01)
    transport, store = engine.transport, engine.store
    await transport.startup()
    try:
        await store.set("ready:" + name, b"1")
        while True:
            done = await store.get("done") is not None
            batch = await transport.receive(["q"], 5, 0.05)
            if batch:
                await asyncio.sleep(0.001)
                await transport.ack(batch)
                print("\\n".join(d.task_id for d in batch), flush=True)
            elif done:
                break
    finally:
        await transport.shutdown()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

# Takes rate-limit grants for a while once told to go; prints "before after" of each grant.
RATE_TAKER = """
import asyncio, sys, time
from conveyor.engines.sqlite import SqliteStore

async def main(path, seconds):
    store = SqliteStore(path)
    await store.startup()
    try:
        while await store.get("go") is None:
            await asyncio.sleep(0.005)
        end = time.time() + seconds
        while time.time() < end:
            before = time.time()
            wait = await store.window_acquire("shared", 5, 0.25)
            if wait == 0.0:
                print(before, time.time(), flush=True)
            else:
                await asyncio.sleep(wait)
    finally:
        await store.shutdown()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def _child_env() -> dict[str, str]:
    # The children import conveyor from wherever this process found it.
    source = str(Path(conveyor.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


async def _spawn(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )


async def _outputs(processes: list[asyncio.subprocess.Process]) -> list[str]:
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in processes)), 40.0
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err.decode()
    return [out.decode() for out, _ in results]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    made = open_engine("sqlite://", path=str(tmp_path / "conveyor.db"), lease_seconds=30.0)
    for part in (made.transport, made.store, made.results):
        assert part is not None
        await part.startup()
    yield made
    for part in (made.transport, made.store, made.results):
        assert part is not None
        await part.shutdown()


@pytest.fixture
def transport(engine: Engine) -> SqliteTransport:
    assert isinstance(engine.transport, SqliteTransport)
    return engine.transport


@pytest.fixture
def store(engine: Engine) -> SqliteStore:
    assert isinstance(engine.store, SqliteStore)
    return engine.store


@pytest.mark.slow
async def test_many_processes_take_every_message_once(tmp_path: Path) -> None:
    path = str(tmp_path / "conveyor.db")
    consumers = [await _spawn(CONSUMER, path, str(i)) for i in range(3)]
    producer, store = SqliteTransport(path), SqliteStore(path)  # opened while the consumers
    try:  # create the same file
        await producer.startup()
        deadline = time.monotonic() + 20
        while len(await store.scan("ready:")) < 3:
            assert time.monotonic() < deadline, "consumers did not start"
            await asyncio.sleep(0.01)
        ids = [f"task-{i}" for i in range(300)]
        for start in range(0, len(ids), 10):
            await producer.publish([Outgoing(i, "q", i.encode()) for i in ids[start : start + 10]])
            await asyncio.sleep(0.002)
        await store.set("done", b"1")
        outputs = await _outputs(consumers)
        acked = Counter(line for out in outputs for line in out.split())
        assert set(acked) == set(ids)
        assert [i for i, n in acked.items() if n != 1] == []
        assert await producer.queue_stats() == []
    finally:
        await producer.shutdown()
        await store.shutdown()


@pytest.mark.slow
async def test_rate_limit_holds_across_processes(store: SqliteStore) -> None:
    limit, period = 5, 0.25
    takers = [await _spawn(RATE_TAKER, store.path, "1.0") for _ in range(2)]
    await store.set("go", b"1")
    outputs = await _outputs(takers)
    per_process = [
        [tuple(map(float, line.split())) for line in out.splitlines()] for out in outputs
    ]
    assert all(per_process), "each process got at least one grant"
    grants = sorted(g for taken in per_process for g in taken)
    assert len(grants) >= 2 * limit
    for i in range(len(grants) - limit):
        group = grants[i : i + limit + 1]
        span = max(after for _, after in group) - min(before for before, _ in group)
        assert span >= period, f"{limit + 1} grants within {span:.3f}s"


# -- startup errors and the file ---------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["/proc/forbidden/x.db", "{tmp}/a-file/x.db", "{tmp}/no-such-dir/x.db", "{tmp}"]
)
async def test_unusable_path_is_a_connection_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = where.format(tmp=tmp_path)
    for part in (SqliteTransport(path), SqliteStore(path), SqliteResultBackend(path)):
        with pytest.raises(BrokerConnectionError, match="cannot open SQLite database") as info:
            await part.startup()
        assert path in str(info.value)
        assert "\n" not in str(info.value)
        await part.shutdown()


async def test_a_file_that_is_not_a_database_is_a_connection_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(BrokerConnectionError, match="not a database"):
        await SqliteTransport(str(path)).startup()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "future.db")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(BrokerConnectionError, match="newer"):
        await SqliteTransport(path).startup()


async def test_file_is_in_wal_mode_with_schema_version(transport: SqliteTransport) -> None:
    with closing(sqlite3.connect(transport.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert transport.safe_url == f"sqlite:///{transport.path}"


async def test_every_call_runs_on_one_thread_off_the_loop(transport: SqliteTransport) -> None:
    threads = {await transport._db.run(lambda _conn: threading.get_ident()) for _ in range(5)}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_used_without_startup_it_opens_itself(tmp_path: Path) -> None:
    transport = SqliteTransport(str(tmp_path / "lazy.db"))
    await transport.publish([Outgoing("t1", "q", b"x")])
    assert await transport.locate("t1") == "waiting"
    await transport.shutdown()


# -- the result store on the same file ---------------------------------------------------------


async def test_transport_and_results_share_one_file(transport: SqliteTransport) -> None:
    results = SqliteResultBackend(transport.path)
    await results.startup()
    try:
        await transport.publish([Outgoing("t1", "q", b"x")])
        await results.set_result("t1", b"r", None)
        assert await results.get_result("t1") == b"r"
        assert await transport.locate("t1") == "waiting"
    finally:
        await results.shutdown()


async def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE messages (task_id TEXT PRIMARY KEY, queue TEXT NOT NULL,"
            " priority INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL, available_at REAL NOT NULL,"
            " eta REAL, owner TEXT, deliveries INTEGER NOT NULL DEFAULT 0,"
            " retrying INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL);"
            "CREATE TABLE cancels (task_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);"
            "CREATE TABLE task_state (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);"
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);"
            "INSERT INTO kv VALUES ('sched:def:a', x'7b7d', NULL),"
            " (char(30) || 'set:g' || char(31) || '0', x'', NULL);"
            "INSERT INTO messages VALUES ('old', 'q', 0, x'01', 0, NULL, NULL, 0, 0, 0);"
            "PRAGMA user_version = 1;"
        )
    engine = open_engine(f"sqlite:///{path}")
    transport, store = engine.transport, engine.store
    assert transport is not None
    assert store is not None
    try:
        [old] = await transport.receive(["q"], 1, 1.0)
        assert (old.task_id, old.body) == ("old", b"\x01")
        assert await store.scan("") == {"sched:def:a": b"{}"}
        assert await store.set_add("g", "0") == 1
    finally:
        await transport.shutdown()
        await store.shutdown()
    with closing(sqlite3.connect(path)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"cancels", "task_state"}.isdisjoint(tables)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_shared_connection_closes_with_its_last_user(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    db = SqliteDb(path)
    transport, results = SqliteTransport(path, db=db), SqliteResultBackend(path, db=db)
    await transport.startup()
    await results.startup()
    await transport.shutdown()
    await results.set_result("t1", b"r", None)  # still open for the result store
    assert await results.get_result("t1") == b"r"
    await results.shutdown()


async def test_wait_sees_a_result_stored_by_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "results.db")
    reader, writer = SqliteResultBackend(path), SqliteResultBackend(path)
    await reader.startup()
    await writer.startup()
    try:
        waiting = asyncio.create_task(reader.wait_result("t1", 10.0))
        await asyncio.sleep(0.05)
        await writer.set_result("t1", b"done", None)
        assert await asyncio.wait_for(waiting, 5.0) == b"done"
    finally:
        await reader.shutdown()
        await writer.shutdown()


async def test_expired_rows_are_swept(transport: SqliteTransport, store: SqliteStore) -> None:
    results = SqliteResultBackend(transport.path)
    await store.set("k", b"v", 0.01)
    await store.window_acquire("r", 1, 0.01)
    await store.set_add("s", "m", 0.01)
    await results.set_result("t1", b"r", 0.01)
    await results.push_stream("t1", [b"a"], 0.01)
    await results.shutdown()
    await asyncio.sleep(0.05)
    transport._db._last_sweep -= 3600  # as if the last sweep were long ago
    await transport.receive(["q"], 1, 0.0)
    with closing(sqlite3.connect(transport.path)) as conn:
        for table in ("kv", "rates", "sets", "set_members", "results", "streams", "stream_items"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table
