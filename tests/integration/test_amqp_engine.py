"""The RabbitMQ engine with real worker processes started through the CLI.

Each app has its own queue prefix on the test RabbitMQ (`tests/servers.py`) and its index in a
SQLite state file in `tmp_path` (which also holds results unless a test says otherwise); its
queues and exchanges are deleted when the test ends. No test here stops that shared server: the
restart test runs on a private node (`test_amqp_restart.py`). SIGKILL, SIGTERM and lease
renewal are in `test_engine_crashes.py`, the same tests on every engine.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aio_pika
import pytest

from conveyor import (
    AmqpBroker,
    BrokerError,
    ConfigurationError,
    TaskStatus,
    broker_from_url,
)
from conveyor._urls import safe_url
from conveyor.engines import registry
from conveyor.engines.amqp import AmqpTransport
from conveyor.engines.amqp import transport as amqp_transport_module
from conveyor.engines.amqp.records import DROPPED, Record, delay_bucket, split_url
from conveyor.engines.base import Delivery, Outgoing
from conveyor.engines.redis import RedisResultBackend
from conveyor.testing import worker
from tests.integration.conftest import LEASE
from tests.integration.test_redis_engine import conveyor, ok
from tests.integration.test_worker_processes import eventually, pid_of
from tests.servers import amqp_url, drop_prefix, free_port, redis_url, unique_prefix

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

MakeApp = Callable[..., Awaitable["App"]]


@pytest.fixture
async def on_amqp(make_app: MakeApp, tmp_path: Path) -> AsyncIterator[MakeApp]:
    """Yield `make(lease=LEASE)`: an app on RabbitMQ under a fresh prefix, its state in SQLite.

    Request it before `workers`, so the workers stop before its queues are deleted.
    """
    made: list[App] = []

    async def make(lease: float = LEASE) -> App:
        state = quote(f"sqlite:///{tmp_path}/amqp-state.db", safe="")
        app = await make_app(
            lease=lease, url=f"{amqp_url()}?prefix={unique_prefix()}&state={state}"
        )
        made.append(app)
        return app

    yield make
    for app in made:
        await app.broker.transport.delete_topology()  # type: ignore[attr-defined]


async def heartbeating(app: App, *pids: int) -> None:
    """Wait until the worker processes `pids` publish heartbeats (so they consume)."""

    async def seen() -> bool:
        return set(pids) <= set(await app.live_workers())

    await eventually(seen, 15, f"workers {sorted(pids)} heartbeating")


async def idle(app: App) -> bool:
    """True when the index holds nothing queued, scheduled or running."""
    return not await app.broker.transport.queue_stats()


# -- results in another engine -----------------------------------------------------------------


async def test_messages_on_rabbitmq_results_in_redis(
    on_amqp: MakeApp, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    results_url = f"{redis_url()}?prefix={unique_prefix()}"
    monkeypatch.setenv("CONVEYOR_RESULT_BACKEND_URL", results_url)  # read by broker_from_url
    try:
        app = await on_amqp()
        assert isinstance(app.broker, AmqpBroker)
        assert isinstance(app.broker.result_backend, RedisResultBackend)
        worker = workers.start(app)
        await heartbeating(app, worker.pid)
        handle = await app.module.add.kiq(2, 3)
        result = await handle.wait_result(timeout=15)
        assert result.return_value == 5
        assert pid_of(result.worker) == worker.pid
        stored = RedisResultBackend(redis_url(), prefix=results_url.rpartition("=")[2])
        assert await stored.get_result(handle.task_id) is not None  # really in Redis
        await stored.shutdown()
    finally:
        drop_prefix(redis_url(), results_url.rpartition("=")[2])


def test_with_result_backend_pairs_any_store(tmp_path: Path) -> None:
    broker = broker_from_url("amqp://guest:secret@127.0.0.1:5672/?prefix=x")
    backend = RedisResultBackend("redis://127.0.0.1:6379/0", prefix="x")
    assert broker.with_result_backend(backend).result_backend is backend
    assert "secret" not in repr(broker)


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_cli_shows_and_acts_on_rabbitmq_state(on_amqp: MakeApp, workers: Workers) -> None:
    app = await on_amqp()
    m = app.module
    await app.broker.kiq_many([m.add.s(i, 1) for i in range(3)])
    for _ in range(2):
        await m.stamp.kicker().with_delay(300).kiq()
    counts = "default: 3 ready, 2 scheduled, 0 running"
    info = ok(await conveyor(app, "info", app.spec)).splitlines()
    assert f"broker:   AmqpBroker {safe_url(amqp_url())}" in info
    assert f"  {counts}" in info
    assert ok(await conveyor(app, "inspect", "queues", app.spec)).splitlines() == [counts]
    assert ok(await conveyor(app, "purge", app.spec)).strip() == "purged 5 message(s)"
    assert await app.broker.transport.queue_stats() == []

    worker = workers.start(app)
    await heartbeating(app, worker.pid)
    assert ok(await conveyor(app, "dlq", "list", app.spec)) == "the dead-letter queue is empty\n"
    bad = await m.boom.kiq()
    assert (await bad.wait_result(timeout=10)).status is TaskStatus.FAILED
    (letter,) = ok(await conveyor(app, "dlq", "list", app.spec)).splitlines()
    assert letter.startswith(f"{bad.task_id} {m.boom.name} queue=default at "), letter
    assert letter.endswith("ValueError: boom"), letter
    (first,) = await app.broker.transport.dead_letters()  # listing took nothing away
    assert ok(await conveyor(app, "dlq", "requeue", app.spec)).strip() == "requeued 1 message(s)"

    async def failed_again() -> bool:  # the worker ran it again, and it failed again
        letters = await app.broker.transport.dead_letters()
        return [d.task_id for d in letters] == [bad.task_id] and letters[0].failed_at > (
            first.failed_at
        )

    await eventually(failed_again, 15, "the requeued task dead-lettered again")


@pytest.mark.parametrize("command", [("info",), ("ping", "--timeout", "5")])
async def test_cli_on_an_unreachable_rabbitmq_prints_one_line_without_the_password(
    make_app: MakeApp, command: tuple[str, ...]
) -> None:
    app = await make_app()  # only the module: the command gets a URL nothing answers on
    port = free_port()
    url = f"amqp://guest:s3cret@127.0.0.1:{port}/?prefix={unique_prefix()}"
    done = await conveyor(app, command[0], app.spec, *command[1:], url=url)
    shown = f"exit {done.returncode}, stdout={done.stdout!r} stderr={done.stderr!r}"
    assert done.returncode == 2, shown
    assert "s3cret" not in done.stdout + done.stderr, shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert f"amqp://guest:***@127.0.0.1:{port}/" in lines[0], shown


# -- the index in the state store ----------------------------------------------------------------


@contextmanager
def failing_writes(state_file: Path, when: str) -> Iterator[None]:
    """Make the state store's `kv` writes matching the SQL condition `when` fail, for real: a
    trigger in the SQLite file that another connection (the transport's) obeys at once."""
    with sqlite3.connect(state_file, isolation_level=None) as conn:
        for event in ("INSERT", "UPDATE"):
            conn.execute(
                f"CREATE TRIGGER fail_{event.lower()} BEFORE {event} ON kv WHEN {when}"
                " BEGIN SELECT RAISE(ABORT, 'state store down'); END"
            )
    try:
        yield
    finally:
        with sqlite3.connect(state_file, isolation_level=None) as conn:
            conn.execute("DROP TRIGGER fail_insert")
            conn.execute("DROP TRIGGER fail_update")


async def started(url: str, **options: Any) -> AmqpTransport:
    """The started transport of an AMQP URL, through the registry like a broker's."""
    transport = registry.open_url(url, **options).transport
    assert isinstance(transport, AmqpTransport)
    await transport.startup()
    return transport


async def stopped(transport: AmqpTransport) -> None:
    """Delete what the transport declared and noted, then close it and its state store."""
    await transport.delete_topology()
    await transport.shutdown()
    await transport.store.shutdown()


@pytest.fixture
async def amqp_transport(tmp_path: Path) -> AsyncIterator[AmqpTransport]:
    """A started transport under a fresh prefix with a SQLite state store; deleted afterwards."""
    state = quote(f"sqlite:///{tmp_path}/state.db", safe="")
    transport = await started(f"{amqp_url()}?prefix={unique_prefix()}&state={state}")
    yield transport
    await stopped(transport)


async def test_a_removed_id_sent_again_runs_once(amqp_transport: AmqpTransport) -> None:
    await amqp_transport.publish([Outgoing("t1", "q", b"first")])
    assert await amqp_transport.remove("t1") is True
    await amqp_transport.publish([Outgoing("t1", "q", b"second")])
    assert await amqp_transport.locate("t1") == "waiting"
    got = await amqp_transport.receive(["q"], 10, 1.0)
    assert [(d.task_id, d.body) for d in got] == [("t1", b"second")]
    await amqp_transport.ack(got)
    assert await amqp_transport.receive(["q"], 10, 0.3) == []  # the removed copy was dropped


async def test_each_loop_publishes_on_a_connection_of_its_own_closed_with_it(
    amqp_transport: AmqpTransport,
) -> None:
    def in_another_loop() -> None:  # as `kiq_sync`'s portal or a thread's `asyncio.run` would
        asyncio.run(amqp_transport.publish([Outgoing("there", "q", b"x")]))

    await asyncio.to_thread(in_another_loop)
    await amqp_transport.publish([Outgoing("here", "q", b"x", priority=1)])
    got = await amqp_transport.receive(["q"], 10, 1.0)
    assert [d.task_id for d in got] == ["here", "there"]
    assert len(amqp_transport._outboxes.each()) == 1  # the other loop's closed when it ended
    await amqp_transport.ack(got)


async def test_a_long_delay_hops_through_buckets_and_is_never_early(
    amqp_transport: AmqpTransport,
) -> None:
    eta = time.time() + 1.3  # buckets of 1024, 256 and then a few ms
    await amqp_transport.publish([Outgoing("later", "q", b"x", eta=eta)])
    assert await amqp_transport.locate("later") == "delayed"
    got = await amqp_transport.receive(["q"], 1, 5.0)
    assert [d.task_id for d in got] == ["later"]
    assert eta <= time.time() < eta + 1.0


async def test_without_a_state_store_it_warns_once_and_works_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = AmqpBroker(amqp_url(), prefix=unique_prefix(), lease_seconds=2.0)

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    with caplog.at_level(logging.WARNING, logger="conveyor.amqp"):
        await broker.startup()
    try:
        warned = [r.message for r in caplog.records if "per-process" in r.message]
        assert len(warned) == 1, warned
        async with worker(broker):
            assert (await (await add.kiq(1, 2)).wait_result(timeout=10)).return_value == 3
    finally:
        await broker.transport.delete_topology()  # type: ignore[attr-defined]
        await broker.shutdown()


async def test_a_retry_whose_publish_fails_goes_back_and_is_not_lost(
    amqp_transport: AmqpTransport, tmp_path: Path
) -> None:
    await amqp_transport.publish([Outgoing("t1", "q", b"first")])
    (held,) = await amqp_transport.receive(["q"], 1, 5.0)
    # The retry's delay bucket is new, so the publish declares it and notes it in the state
    # store, and that note fails: the publish fails after the index record was written.
    with failing_writes(tmp_path / "state.db", "NEW.key LIKE '%:d:%'"):
        with pytest.raises(BrokerError, match="state store down"):
            await amqp_transport.release(held, body=b"second", delay=0.3)
        (again,) = await amqp_transport.receive(["q"], 1, 5.0)  # nacked back, not held
    assert (again.task_id, again.body, again.deliveries) == ("t1", b"first", 2)
    # the same bucket, declared again and noted this time (so the fixture deletes it)
    await amqp_transport.release(again, body=b"second", delay=0.3)
    assert await amqp_transport.locate("t1") == "delayed"
    (retried,) = await amqp_transport.receive(["q"], 1, 5.0)
    assert (retried.body, retried.deliveries) == (b"second", 3)
    await amqp_transport.ack([retried])
    assert await amqp_transport.receive(["q"], 1, 0.3) == []  # the original was acked


async def test_a_receive_whose_leases_fail_puts_every_message_back(
    amqp_transport: AmqpTransport, tmp_path: Path
) -> None:
    await amqp_transport.publish([Outgoing(f"t{n}", "q", b"x") for n in range(3)])
    failing = failing_writes(tmp_path / "state.db", "CAST(NEW.value AS TEXT) LIKE 'running|%'")
    with failing, pytest.raises(BrokerError, match="state store down"):
        await amqp_transport.receive(["q"], 10, 5.0)
    got: list[str] = []
    deadline = time.monotonic() + 5  # well within the 30 s lease: nothing is left held
    while len(got) < 3 and time.monotonic() < deadline:
        got += [d.task_id for d in await amqp_transport.receive(["q"], 10, 1.0)]
    assert sorted(got) == ["t0", "t1", "t2"]


async def test_acks_made_together_settle_their_deliveries_and_no_other(
    amqp_transport: AmqpTransport,
) -> None:
    """Acks made at once go as one batch: a `multiple` ack for those RabbitMQ delivered in a
    row, never passing a delivery still held (it comes back when the channel closes)."""
    await amqp_transport.publish([Outgoing(f"t{n}", "q", b"x") for n in range(6)])
    got: list[Delivery] = []
    while len(got) < 6:  # handed out in the order RabbitMQ delivered them
        got += await amqp_transport.receive(["q"], 6 - len(got), 5.0)
    held = [got[2].task_id, got[4].task_id]
    await asyncio.gather(*(amqp_transport.ack([got[n]]) for n in (0, 1, 3, 5)))
    await amqp_transport.shutdown()  # the channel closes: RabbitMQ requeues what is unacked
    await amqp_transport.startup()
    back: list[Delivery] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(back) < 2:
        back += await amqp_transport.receive(["q"], 10, 0.5)
    back += await amqp_transport.receive(["q"], 10, 0.3)  # and nothing more
    assert sorted(d.task_id for d in back) == sorted(held)
    await amqp_transport.ack(back)


async def test_a_consumer_rabbitmq_cancels_is_started_again(
    amqp_transport: AmqpTransport, tmp_path: Path
) -> None:
    """Deleting a queue cancels its consumers; the next receive declares it and consumes anew."""
    assert await amqp_transport.receive(["q"], 1, 0.2) == []  # consuming "q"
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(amqp_transport.queue_name("q"))
    state = quote(f"sqlite:///{tmp_path}/state.db", safe="")
    sender = await started(f"{amqp_url()}?prefix={amqp_transport.prefix}&state={state}")
    try:
        await sender.publish([Outgoing("t1", "q", b"x")])  # declares the queue again
        got: list[Delivery] = []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            got = await amqp_transport.receive(["q"], 1, 0.5)
        assert [d.task_id for d in got] == ["t1"]
        await amqp_transport.ack(got)
    finally:
        await sender.shutdown()
        await sender.store.shutdown()


async def test_a_dip_in_capacity_keeps_the_prefetch_and_a_lasting_one_lowers_it(
    amqp_transport: AmqpTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prefetch change is a round trip, and a draining worker's count dips on many
    receives: a lower count is set only once it has lasted `_SHRINK_SECONDS`."""
    await amqp_transport.publish([Outgoing(f"t{n}", "q", b"x") for n in range(4)])
    got: list[Delivery] = []
    while len(got) < 4:
        got += await amqp_transport.receive(["q"], 4 - len(got), 5.0)
    assert amqp_transport._prefetch == 4
    await amqp_transport.ack(got[1:])
    assert await amqp_transport.receive(["q"], 1, 0.1) == []  # one held and one asked: 2
    assert amqp_transport._prefetch == 4
    monkeypatch.setattr(amqp_transport_module, "_SHRINK_SECONDS", 0.0)  # as if a second passed
    assert await amqp_transport.receive(["q"], 1, 0.1) == []
    assert amqp_transport._prefetch == 2
    await amqp_transport.ack(got[:1])


async def test_without_a_state_store_a_send_leaves_no_record_and_an_id_may_run_again() -> None:
    transport = await started(f"{amqp_url()}?prefix={unique_prefix()}", lease_seconds=2.0)
    try:
        for body in (b"first", b"again"):
            await transport.publish([Outgoing("t1", "q", body)])
            assert await transport.locate("t1") is None  # the sender keeps no record
            (got,) = await transport.receive(["q"], 1, 5.0)
            assert got.body == body  # a second send of the id is not ignored
            assert await transport.locate("t1") == "leased"  # the worker's own record
            await transport.ack([got])
        assert await transport.queue_stats() == []
    finally:
        await stopped(transport)


def test_records_and_url_options() -> None:
    record = Record("running", 2, 10.0, 0.0, 5, "odd|queue", "abc")
    assert Record.decode(record.encode()) == record
    assert record.where(9.0) == "leased"
    assert record.where(11.0) == "waiting"  # its lease ran out
    assert Record("scheduled", eta=20.0).where(19.0) == "delayed"
    assert Record("retrying", eta=20.0).where(21.0) == "waiting"  # an older version's record
    assert Record(DROPPED).where(0.0) is None
    assert delay_bucket(time.time() - 1) is None
    assert delay_bucket(time.time() + 1.0) == 9  # 512 ms first
    assert delay_bucket(time.time() + 10**8) == 31  # capped; it hops again
    url, ours = split_url("amqps://u:p@h:5671/v?prefix=a&heartbeat=10&state=redis%3A%2F%2Fr")
    assert url == "amqps://u:p@h:5671/v?heartbeat=10"
    assert ours == {"prefix": "a", "state": "redis://r"}
    with pytest.raises(ConfigurationError):
        split_url("redis://h")
    with pytest.raises(ConfigurationError, match=r"'soon' in 'amqp://u:\*\*\*@h/") as caught:
        registry.open_url("amqp://u:secret@h/?lease=soon")
    assert "secret" not in str(caught.value)
    assert Record("queued", tag="new,old").accepts("old")
    assert not Record("queued", tag="new,old").accepts("other")
    assert Record.decode(b"not a record") is None
