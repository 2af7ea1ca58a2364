"""The Redis engine with real worker processes started through the CLI.

The test is the producer and `python -m conveyor worker` runs the tasks of `app_template.py`, as
in `test_worker_processes.py`, but on Redis: each app has its own key prefix on the test Redis
(`tests/servers.py`), deleted when the test ends, and the restart test runs a `redis-server` of
its own. Crashes and outages are real signals; the tests wait on results, marks and logs, never
on fixed sleeps. SIGKILL, SIGTERM and lease renewal are in `test_engine_crashes.py`, the same
tests on every engine.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qsl, urlsplit

import pytest

from conveyor import Broker, BrokerError, RedisBroker, TaskStatus, broker_from_url
from conveyor._urls import safe_url
from tests.integration.conftest import LEASE
from tests.integration.test_worker_processes import (
    assert_succeeded,
    eventually,
    numbers,
    pid_of,
    results,
)
from tests.servers import PrivateRedis, free_port, redis_url, unique_prefix

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def on_redis(server: str | None = None) -> str:
    """A broker URL on `server` (the test Redis by default) under a fresh key prefix."""
    server = server or redis_url()
    return f"{server}{'&' if '?' in server else '?'}prefix={unique_prefix()}"


async def heartbeating(app: App, *pids: int) -> None:
    """Wait until the worker processes `pids` publish heartbeats (so they consume)."""

    async def seen() -> bool:
        return set(pids) <= set(await app.live_workers())

    await eventually(seen, 15, f"workers {sorted(pids)} heartbeating")


async def stats(broker: Broker) -> list[tuple[str, int, int, int]]:
    """`queue_stats` as (queue, ready, scheduled, running) tuples."""
    found = await broker.transport.queue_stats()
    return [(q.name, q.ready, q.scheduled, q.running) for q in found]


async def conveyor(
    app: App, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m conveyor *args` to its end in the app's directory, on the app's broker
    URL or on `url`; the event loop goes on meanwhile."""
    env = {**os.environ, "CONVEYOR_BROKER_URL": url or app.url, "PYTHONDONTWRITEBYTECODE": "1"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=app.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return await asyncio.to_thread(run)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must succeed without a traceback."""
    shown = (
        f"{done.args[3:]}: exit {done.returncode}, stdout={done.stdout!r} stderr={done.stderr!r}"
    )
    assert done.returncode == 0, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    return done.stdout


# -- 1. a Redis restart mid-run -------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_redis_restart_mid_run_loses_no_task(
    private_redis: PrivateRedis, make_app: Callable[..., Awaitable[App]], workers: Workers
) -> None:
    app = await make_app(url=on_redis(private_redis.url))
    worker = workers.start(app, "--max-async-tasks", "4")
    await heartbeating(app, worker.pid)
    count = 120
    handles = await app.broker.kiq_many([app.module.work.s(n, 0.1) for n in range(count)])
    waiting = asyncio.create_task(results(handles, timeout=60))  # a producer on its results
    await eventually(lambda: len(app.marks("done")) >= 20, 20, "a first part of the tasks done")

    private_redis.stop()  # SIGTERM by pid; the append-only file keeps every write
    late = asyncio.create_task(results(handles[-10:], timeout=60))  # a wait begun as it stops
    await eventually(lambda: "receive failed" in worker.stderr(), 20, "the worker in the outage")
    assert len(app.marks("done")) < count, "the outage came after the run"
    assert worker.proc.poll() is None
    later = asyncio.create_task(results(handles[-20:-10], timeout=60))  # one well into it
    start = time.monotonic()
    with pytest.raises(BrokerError) as caught:  # a send gives up after its retries
        await app.module.add.kiq(0, 0)
    assert time.monotonic() - start < 15
    assert f"127.0.0.1:{private_redis.port}/0" in str(caught.value)
    private_redis.start()  # the same port and directory

    waits = {"waiting": waiting, "late": late, "later": later}
    outcomes = await asyncio.gather(*waits.values(), return_exceptions=True)
    failed = {k: repr(o) for k, o in zip(waits, outcomes, strict=True) if isinstance(o, Exception)}
    assert not failed, f"wait_result did not ride the outage out: {failed}"
    found = await waiting
    assert_succeeded(found)
    assert [r.return_value for r in found] == list(range(count))
    assert [r.return_value for r in await late] == list(range(count - 10, count))
    assert [r.return_value for r in await later] == list(range(count - 20, count - 10))
    assert set(numbers(app, "done")) == set(range(count))
    assert worker.proc.poll() is None  # it rode the outage out
    assert "receive works again" in worker.stderr()
    assert await stats(app.broker) == []  # nothing left behind, nothing dead
    assert await app.broker.transport.dead_letters() == []
    after = await (await app.module.add.kiq(2, 3)).wait_result(timeout=15)
    assert after.return_value == 5  # the producer sends again too


# -- 2. prefixes keep apps apart ---------------------------------------------------------------


async def test_apps_on_two_prefixes_do_not_see_each_others_tasks(
    make_app: Callable[..., Awaitable[App]], workers: Workers
) -> None:
    a = await make_app(url=on_redis())
    b = await make_app(url=on_redis())  # the same Redis and database, another prefix
    b_work = await b.broker.kiq_many([b.module.work.s(n, 0.0) for n in range(100, 105)])
    b_ping = await b.broker.kiq_by_name("conveyor:ping")  # a task name both apps know
    a_work = await a.broker.kiq_many([a.module.work.s(n, 0.0) for n in range(3)])
    assert await stats(a.broker) == [("default", 3, 0, 0)]
    assert await stats(b.broker) == [("default", 6, 0, 0)]

    a_worker = workers.start(a)
    await heartbeating(a, a_worker.pid)
    found = await results(a_work)
    assert_succeeded(found)
    assert {pid_of(r.worker) for r in found} == {a_worker.pid}
    a_ping = await (await a.broker.kiq_by_name("conveyor:ping")).wait_result(timeout=10)
    assert a_ping.status is TaskStatus.SUCCEEDED  # A's worker has fetched since B's pings
    assert sorted(numbers(a, "started")) == [0, 1, 2]
    assert b.marks("started") == []
    for handle in [*b_work, b_ping]:
        assert await handle.status() is TaskStatus.QUEUED
    assert await stats(b.broker) == [("default", 6, 0, 0)]
    assert await stats(a.broker) == []
    assert await b.broker.get_handle(a_work[0].task_id).get_result() is None  # results too
    assert set(await b.broker.store.scan("worker:")) == set()  # heartbeats too

    b_worker = workers.start(b)
    found = await results([*b_work, b_ping])
    assert_succeeded(found)
    assert {pid_of(r.worker) for r in found} == {b_worker.pid}
    assert sorted(numbers(b, "started")) == list(range(100, 105))
    assert sorted(numbers(a, "started")) == [0, 1, 2]
    assert await stats(b.broker) == []


# -- 3. the command line on Redis ----------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_cli_shows_and_acts_on_redis_state(
    make_app: Callable[..., Awaitable[App]], workers: Workers
) -> None:
    app = await make_app(url=on_redis())
    m = app.module
    await app.broker.kiq_many([m.add.s(i, 1) for i in range(3)])
    for _ in range(2):
        await m.stamp.kicker().with_delay(300).kiq()
    counts = "default: 3 ready, 2 scheduled, 0 running"

    shown_url = safe_url(redis_url())  # the server, without conveyor's options
    info = ok(await conveyor(app, "info", app.spec)).splitlines()
    assert f"broker:   RedisBroker {shown_url}" in info
    assert "results:  RedisResultBackend" in info
    assert any(line.startswith(f"  {m.add.name}(x") for line in info), info
    assert f"  {counts}" in info
    assert ok(await conveyor(app, "inspect", "queues", app.spec)).splitlines() == [counts]
    assert ok(await conveyor(app, "purge", app.spec)).strip() == "purged 5 message(s)"
    assert await stats(app.broker) == []
    assert "queues:   (empty)" in ok(await conveyor(app, "info", app.spec)).splitlines()

    worker = workers.start(app)
    await heartbeating(app, worker.pid)
    ping = ok(await conveyor(app, "ping", app.spec)).splitlines()
    assert len(ping) == 2, ping
    assert re.fullmatch(rf"broker {re.escape(shown_url)} reachable in [\d.]+ ms", ping[0])
    assert re.fullmatch(rf"round trip through worker \S+:{worker.pid} in [\d.]+ ms", ping[1])
    listed = ok(await conveyor(app, "inspect", "workers", app.spec))
    assert re.search(rf"^\S+:{worker.pid} queues=default ", listed, re.M), listed

    assert ok(await conveyor(app, "dlq", "list", app.spec)) == "the dead-letter queue is empty\n"
    bad = await m.boom.kiq()
    assert (await bad.wait_result(timeout=10)).status is TaskStatus.FAILED
    (letter,) = ok(await conveyor(app, "dlq", "list", app.spec)).splitlines()
    assert letter.startswith(f"{bad.task_id} {m.boom.name} queue=default at "), letter
    assert letter.endswith("ValueError: boom"), letter
    (first,) = await app.broker.transport.dead_letters()
    requeued = ok(await conveyor(app, "dlq", "requeue", app.spec))
    assert requeued.strip() == "requeued 1 message(s)"

    async def failed_again() -> bool:  # the worker ran it again, and it failed again
        letters = await app.broker.transport.dead_letters()
        return [d.task_id for d in letters] == [bad.task_id] and letters[0].failed_at > (
            first.failed_at
        )

    await eventually(failed_again, 15, "the requeued task dead-lettered again")


@pytest.mark.parametrize("command", [("info",), ("ping", "--timeout", "5")])
async def test_cli_on_an_unreachable_redis_prints_one_line_without_the_password(
    make_app: Callable[..., Awaitable[App]], command: tuple[str, ...]
) -> None:
    app = await make_app()  # only the module: the command gets a Redis URL nothing answers on
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0?prefix={unique_prefix()}"
    start = time.monotonic()
    done = await conveyor(app, command[0], app.spec, *command[1:], url=url)
    took = time.monotonic() - start
    shown = f"exit {done.returncode}, stdout={done.stdout!r} stderr={done.stderr!r}"
    assert done.returncode == 2, shown  # the CLI's exit code for a user-side failure
    assert "s3cret" not in done.stdout + done.stderr, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    assert done.stdout == "", shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert f"redis://:***@127.0.0.1:{port}/0" in lines[0], shown
    assert took < 15, f"took {took:.1f} s"


# -- 4. entries a foreign client added ------------------------------------------------------------


#: Entries another client XADDs to a queue's band-0 stream, and what their problem names.
FOREIGN: list[tuple[dict[str, str], str]] = [
    ({"task": "x", "payload": "y"}, "no task id"),  # other fields only
    ({"t": "no-body", "n": "0"}, "no body"),
    ({"t": "bad-n", "b": "z", "n": "many"}, "not a delivery count"),
    ({"b": "1", "n": "0"}, "no task id"),
    ({"n": "0", "b": "2"}, "no task id"),  # a second id-less entry, its fields in another order
]


def kept_body(fields: dict[str, str]) -> bytes:
    """The body a foreign entry's dead letter keeps: its field b, else all its fields."""
    return (fields.get("b") or "\n".join(f"{k}={v}" for k, v in fields.items())).encode()


async def test_foreign_stream_entries_are_dead_lettered_and_the_rest_run(
    make_app: Callable[..., Awaitable[App]], workers: Workers
) -> None:
    import redis

    app = await make_app(url=on_redis())
    stream = f"{dict(parse_qsl(urlsplit(app.url).query))['prefix']}:{{default}}:s:0"
    before = await app.module.add.kiq(1, 1)
    reordered = await app.module.add.kiq(2, 3)
    client = redis.Redis.from_url(redis_url())
    try:  # the second task's entry written again with its fields in another order, plus one
        rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(stream))  # sync client
        [(entry, own)] = rows[1:]
        client.xdel(stream, entry)
        client.xadd(stream, {"n": "0", "x": "1", "b": own[b"b"], "t": own[b"t"]})
        for fields, _ in FOREIGN:
            client.xadd(stream, fields)  # type: ignore[arg-type]  # its dict type is invariant
    finally:
        client.close()
    after = await app.module.add.kiq(3, 4)

    worker = workers.start(app)
    found = await results([before, reordered, after])
    assert_succeeded(found)
    assert [r.return_value for r in found] == [2, 5, 7]

    async def all_dead() -> bool:
        return len(await app.broker.transport.dead_letters()) == len(FOREIGN)

    await eventually(all_dead, 15, "every foreign entry dead-lettered")
    problems = {kept_body(fields): problem for fields, problem in FOREIGN}
    letters = await app.broker.transport.dead_letters()
    assert sorted(letter.body for letter in letters) == sorted(problems)
    for letter in letters:
        assert letter.reason.startswith("SerializationError: malformed entry: "), letter.reason
        assert problems[letter.body] in letter.reason, letter.reason
    assert len({letter.task_id for letter in letters}) == len(FOREIGN)  # none overwrote another
    assert await stats(app.broker) == []
    assert worker.proc.poll() is None


# -- 5. the producer on an unreachable Redis -------------------------------------------------------


@pytest.mark.parametrize("how", ["class", "url"])
async def test_kiq_on_an_unreachable_redis_raises_naming_the_url_without_the_password(
    how: str,
) -> None:
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    prefix = unique_prefix()
    broker: Broker
    if how == "class":
        broker = RedisBroker(url, prefix=prefix, lease_seconds=LEASE)
    else:
        broker = broker_from_url(f"{url}?prefix={prefix}&lease=2")

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
    assert f"redis://:***@127.0.0.1:{port}/0" in message, message
    assert "s3cret" not in "".join(traceback.format_exception(caught.value))
    assert took < 8, f"kiq took {took:.1f} s to fail"
