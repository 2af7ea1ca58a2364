"""The NATS JetStream engine with real worker processes started through the CLI.

The test is the producer and `python -m conveyor worker` runs the tasks of `app_template.py`, as
in `test_redis_engine.py`, but on NATS: each app has its own prefix (its own streams) on the test
server (`tests/servers.py`), deleted when the test ends, and the restart test runs a
`nats-server` of its own. Crashes are real signals; the tests wait on results, marks and logs,
never on fixed sleeps. SIGKILL, SIGTERM and lease renewal are in `test_engine_crashes.py`, the
same tests on every engine.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from conveyor import Broker, BrokerError, NatsBroker, TaskStatus, broker_from_url
from conveyor.engines.base import Outgoing
from conveyor.engines.nats import NatsStore, NatsTransport
from tests.integration.conftest import LEASE
from tests.integration.test_redis_engine import conveyor, heartbeating, ok, stats
from tests.integration.test_worker_processes import (
    assert_succeeded,
    eventually,
    numbers,
    results,
)
from tests.servers import (
    PrivateNats,
    _reachable,
    drop_nats_prefix,
    free_port,
    nats_url,
    unique_prefix,
)

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

#: Builds a broker URL on a NATS server under a fresh prefix, deleted when the test ends.
OnNats = Callable[..., str]


@pytest.fixture
async def on_nats(workers: Workers) -> AsyncIterator[OnNats]:
    """Yield `on_nats(server=None)`: a URL with a fresh prefix; its streams go at the end
    (after the test's workers stop)."""
    made: list[tuple[str, str]] = []

    def url(server: str | None = None) -> str:
        server = server or nats_url()
        prefix = unique_prefix()
        made.append((server, prefix))
        return f"{server}?prefix={prefix}"

    yield url
    workers.stop_all()
    for server, prefix in made:
        if _reachable("127.0.0.1", int(server.rsplit(":", 1)[1])):
            await drop_nats_prefix(server, prefix)


async def _drained(broker: Broker) -> bool:
    """True once no message is left (a result is stored just before its message is acked)."""
    return await stats(broker) == []


# -- 1. the command line on NATS ------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_cli_shows_and_acts_on_nats_state(
    make_app: Callable[..., Awaitable[App]], workers: Workers, on_nats: OnNats
) -> None:
    app = await make_app(url=on_nats())
    m = app.module
    await app.broker.kiq_many([m.add.s(i, 1) for i in range(3)])
    for _ in range(2):
        await m.stamp.kicker().with_delay(300).kiq()
    counts = "default: 3 ready, 2 scheduled, 0 running"

    shown_url = nats_url()  # the server, without conveyor's options
    info = ok(await conveyor(app, "info", app.spec)).splitlines()
    assert f"broker:   NatsBroker {shown_url}" in info
    assert "results:  NatsResultBackend" in info
    assert f"  {counts}" in info
    assert ok(await conveyor(app, "inspect", "queues", app.spec)).splitlines() == [counts]
    assert ok(await conveyor(app, "purge", app.spec)).strip() == "purged 5 message(s)"
    await eventually(lambda: _drained(app.broker), 10, "nothing left after the purge")

    worker = workers.start(app)
    await heartbeating(app, worker.pid)
    ping = ok(await conveyor(app, "ping", app.spec)).splitlines()
    assert re.fullmatch(rf"broker {re.escape(shown_url)} reachable in [\d.]+ ms", ping[0])
    assert re.fullmatch(rf"round trip through worker \S+:{worker.pid} in [\d.]+ ms", ping[1])

    bad = await m.boom.kiq()
    assert (await bad.wait_result(timeout=10)).status is TaskStatus.FAILED
    (letter,) = ok(await conveyor(app, "dlq", "list", app.spec)).splitlines()
    assert letter.startswith(f"{bad.task_id} {m.boom.name} queue=default at "), letter
    assert letter.endswith("ValueError: boom"), letter
    (first,) = await app.broker.transport.dead_letters()
    assert ok(await conveyor(app, "dlq", "requeue", app.spec)).strip() == "requeued 1 message(s)"

    async def failed_again() -> bool:  # the worker ran it again, and it failed again
        letters = await app.broker.transport.dead_letters()
        return [d.task_id for d in letters] == [bad.task_id] and letters[0].failed_at > (
            first.failed_at
        )

    await eventually(failed_again, 15, "the requeued task dead-lettered again")


# -- 2. an unreachable server ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [("info",), ("ping", "--timeout", "5")])
async def test_cli_on_an_unreachable_nats_prints_one_line_without_the_password(
    make_app: Callable[..., Awaitable[App]], command: tuple[str, ...]
) -> None:
    app = await make_app()  # only the module: the command gets a URL nothing answers on
    port = free_port()
    url = f"nats://user:s3cret@127.0.0.1:{port}?prefix={unique_prefix()}"
    start = time.monotonic()
    done = await conveyor(app, command[0], app.spec, *command[1:], url=url)
    took = time.monotonic() - start
    shown = f"exit {done.returncode}, stdout={done.stdout!r} stderr={done.stderr!r}"
    assert done.returncode == 2, shown
    assert "s3cret" not in done.stdout + done.stderr, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert f"nats://user:***@127.0.0.1:{port}" in lines[0], shown
    assert took < 15, f"took {took:.1f} s"


@pytest.mark.parametrize("how", ["class", "url"])
async def test_kiq_on_an_unreachable_nats_raises_naming_the_url_without_the_password(
    how: str,
) -> None:
    port = free_port()
    url = f"nats://user:s3cret@127.0.0.1:{port}"
    broker: Broker
    if how == "class":
        broker = NatsBroker(url, prefix=unique_prefix(), lease_seconds=LEASE)
    else:
        broker = broker_from_url(f"{url}?prefix={unique_prefix()}&lease={LEASE:g}")

    @broker.task
    async def noop() -> None:
        return None

    start = time.monotonic()
    try:
        with pytest.raises(BrokerError) as caught:
            await noop.kiq()
        took = time.monotonic() - start
    finally:
        await broker.shutdown()
    message = str(caught.value)
    assert f"nats://user:***@127.0.0.1:{port}" in message, message
    assert "s3cret" not in "".join(traceback.format_exception(caught.value))
    assert took < 8, f"kiq took {took:.1f} s to fail"


# -- 3. a server restart mid-run ------------------------------------------------------------------


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A started `nats-server` of this test; stopped at the end (by pid)."""
    server = PrivateNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(90)
async def test_nats_restart_mid_run_loses_no_task(
    private_nats: PrivateNats,
    make_app: Callable[..., Awaitable[App]],
    workers: Workers,
    on_nats: OnNats,
) -> None:
    app = await make_app(url=on_nats(private_nats.url))
    worker = workers.start(app, "--max-async-tasks", "4")
    await heartbeating(app, worker.pid)
    count = 60
    handles = await app.broker.kiq_many([app.module.work.s(n, 0.1) for n in range(count)])
    await eventually(lambda: len(app.marks("done")) >= 10, 20, "a first part of the tasks done")

    private_nats.stop()  # SIGTERM by pid; JetStream keeps its streams on disk
    await eventually(lambda: "receive failed" in worker.stderr(), 20, "the worker in the outage")
    assert worker.proc.poll() is None
    private_nats.start()  # the same port and directory

    found = await results(handles, timeout=60)
    assert_succeeded(found)
    assert [r.return_value for r in found] == list(range(count))
    assert set(numbers(app, "done")) == set(range(count))
    assert worker.proc.poll() is None  # it rode the outage out
    await eventually(lambda: _drained(app.broker), 10, "every message acked")
    after = await (await app.module.add.kiq(2, 3)).wait_result(timeout=15)
    assert after.return_value == 5  # the producer sends again too


# -- 4. names that are not subject tokens ----------------------------------------------------------


async def test_queue_names_and_task_ids_with_subject_characters(on_nats: OnNats) -> None:
    url = on_nats()
    broker = broker_from_url(url)
    transport = broker.transport
    await broker.startup()
    try:
        odd = ["a.b", "x y", "*", "q>", "é=1", ""]
        await transport.publish([Outgoing(f"id.{n}", q, q.encode()) for n, q in enumerate(odd)])
        assert await transport.locate("id.1") == "waiting"
        assert sorted(s.name for s in await transport.queue_stats()) == sorted(odd)
        got = await transport.receive(odd, 10, 2.0)
        assert sorted((d.task_id, d.queue, d.body) for d in got) == sorted(
            (f"id.{n}", q, q.encode()) for n, q in enumerate(odd)
        )
        assert await transport.locate("id.1") == "leased"
        keys = ["k.*> z", "k.:x", "k.::", "k.", "k.=3D:é"]
        for n, key in enumerate(keys):
            await broker.store.set(key, b"%d" % n)
        assert await broker.store.scan("k.") == {key: b"%d" % n for n, key in enumerate(keys)}
        assert await broker.store.scan("k.:") == {"k.:x": b"1", "k.::": b"2"}
        assert await broker.store.get_many([*keys, "k.:y"]) == [b"0", b"1", b"2", b"3", b"4", None]
        await transport.ack(got)
        await eventually(lambda: _drained(broker), 10, "every message acked")
    finally:
        await broker.shutdown()


# -- 5. nothing grows without bound ----------------------------------------------------------------


async def test_housekeeping_deletes_expired_kv_entries_and_keeps_the_others(
    on_nats: OnNats,
) -> None:
    broker = broker_from_url(on_nats())
    transport, store = cast(NatsTransport, broker.transport), cast(NatsStore, broker.store)
    await broker.startup()
    try:
        for n in range(300):  # more than one batch of the walk
            await store.set_nx(f"lock:{n}", b"1", 0.05)
        await store.set("sched:def:a", b"kept")
        await store.set("worker:w", b"live", 60)
        await store.set_add("group:g", "0", 0.05)
        await eventually(lambda: _is_none(store.get("lock:299")), 10, "the short TTLs expired")
        await transport.receive(["nothing"], 1, 0)  # a worker's fetch does the housekeeping
        counts = await store.client.subject_counts("kv", store.client.subject(">"))
        assert sorted(counts) == sorted(
            store.client.subject("kv", *k) for k in (("sched", "def", "a"), ("worker", "w"))
        )
        assert await store.get("sched:def:a") == b"kept"
    finally:
        await broker.shutdown()


async def _is_none(value: Awaitable[bytes | None]) -> bool:
    return await value is None


async def test_cancel_requests_are_read_with_one_listing_of_their_segment(
    on_nats: OnNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = broker_from_url(on_nats())
    store = cast(NatsStore, broker.store)
    await broker.startup()
    try:
        await store.set("worker:w", b"live", 60)
        await broker.state.request_cancel("t.3")
        await broker.state.request_cancel("other")
        listed: list[str] = []
        counts = store.client.subject_counts

        async def spy(kind: str, subjects: str) -> dict[str, int]:
            listed.append(subjects)
            return await counts(kind, subjects)

        monkeypatch.setattr(store.client, "subject_counts", spy)  # watched, not replaced
        running = [f"t.{n}" for n in range(100)]
        assert await broker.state.cancel_requested(running) == {"t.3"}
        assert listed == [store.client.subject("kv", "cancel", ">")]
    finally:
        await broker.shutdown()


async def test_generator_streams_longer_than_a_message_read_from_an_offset(
    on_nats: OnNats,
) -> None:
    broker = broker_from_url(on_nats())
    results = broker.result_backend
    await broker.startup()
    try:
        big = [bytes([n]) * 400_000 for n in range(4)]  # 1.6 MB in all: over max_payload
        for item in big:
            await results.push_stream("t", [item], 60)
        small = [b"%d" % n for n in range(300)]
        await results.push_stream("t", small, 60)
        await results.close_stream("t", 60)
        assert await results.read_stream("t", 2) == (258, big[2:] + small[:254], False)
        assert await results.read_stream("t", 258) == (304, small[254:], True)  # bounded reads
        assert await results.read_stream("t", 300) == (304, small[296:], True)
    finally:
        await broker.shutdown()


async def test_shutting_a_broker_down_leaves_another_on_the_same_url_working(
    on_nats: OnNats,
) -> None:
    url = on_nats()
    one, two = broker_from_url(url), broker_from_url(url)
    await one.startup()
    await two.startup()
    try:
        connection = await cast(NatsTransport, two.transport).client.connection()
        await one.shutdown()
        assert connection.is_connected  # not closed under the other broker
        await two.store.set("k", b"v")
        assert await two.store.get("k") == b"v"
    finally:
        await two.shutdown()


async def test_subjects_another_stream_holds_are_named_in_the_error() -> None:
    """Another app's stream over this prefix's subjects: the error says which stream it is."""
    import json

    import nats

    prefix = unique_prefix()
    nc = await nats.connect(nats_url(), connect_timeout=3, max_reconnect_attempts=1)
    other = f"OTHER_{prefix.replace('-', '_')}"
    config = {"name": other, "subjects": [f"{prefix}.>"], "storage": "memory"}
    await nc.request(f"$JS.API.STREAM.CREATE.{other}", json.dumps(config).encode(), timeout=5)
    broker = NatsBroker(nats_url(), prefix=prefix)
    try:
        with pytest.raises(BrokerError, match=rf"held by stream\(s\) {other}; give this app"):
            await broker.startup()
    finally:
        await broker.shutdown()
        await nc.request(f"$JS.API.STREAM.DELETE.{other}", b"", timeout=5)
        await nc.close()
        await drop_nats_prefix(nats_url(), prefix)
