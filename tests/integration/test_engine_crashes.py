"""Crashes and stops on every engine with a worker process (SQLite, Redis, PostgreSQL, NATS
JetStream, RabbitMQ), with real worker processes started through the CLI: SIGKILL mid-run, a
task longer than its lease, SIGTERM.

The same three tests run on every engine; what differs is how a killed worker's messages come
back (a lapsed lease, or RabbitMQ's requeue of a dead connection at once) and which engine
settles a message in the same step as its result. Each engine's own module has its restarts,
CLI and layout; `test_worker_processes.py` the rest of the worker's behaviour on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from conveyor import Broker, TaskStatus
from tests.integration.conftest import LEASE
from tests.integration.test_redis_engine import heartbeating, on_redis, stats
from tests.integration.test_worker_processes import (
    assert_succeeded,
    eventually,
    numbers,
    pid_of,
    results,
)
from tests.servers import (
    amqp_url,
    drop_nats_prefix,
    drop_postgres_schema,
    nats_url,
    postgres_url,
    unique_prefix,
)

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


#: Seconds after a SIGKILL within which each engine runs a killed worker's task again: not
#: before the lease (renewed every lease/3) ran out, and soon after it did; at once on
#: RabbitMQ, which requeues a dead connection's unacked messages.
RERUN_WINDOW = {
    "sqlite": (0.5, LEASE + 3.0),
    "redis": (0.5, LEASE + 3.0),
    "postgres": (0.5, LEASE + 3.0),
    "nats": (0.5, LEASE + 3.0),
    "amqp": (0.0, 10.0),
}

MakeApp = Callable[..., Awaitable["App"]]


class Engine:
    """The engine of one test: its name, and `make(lease)` for an app on it."""

    def __init__(self, name: str, make: MakeApp) -> None:
        self.name, self.make = name, make


@pytest.fixture(params=list(RERUN_WINDOW))
async def engine(
    request: pytest.FixtureRequest, make_app: MakeApp, workers: Workers, tmp_path: Path
) -> AsyncIterator[Engine]:
    """An engine whose apps each have a fresh prefix (or SQLite file); what they declared is
    deleted at the end, after the test's workers stop (Redis keys go with `make_app`)."""
    name: str = request.param
    made: list[tuple[App, str]] = []

    async def make(lease: float | None = LEASE) -> App:
        if name == "sqlite":
            return await make_app(lease=lease)
        if name == "redis":
            url = on_redis()
        elif name == "nats":
            url = f"{nats_url()}?prefix={unique_prefix()}"
        elif name == "postgres":
            url = f"{postgres_url()}?schema={unique_prefix().replace('-', '_')}"
        else:
            state = quote(f"sqlite:///{tmp_path}/amqp-state.db", safe="")
            url = f"{amqp_url()}?prefix={unique_prefix()}&state={state}"
        app = await make_app(lease=lease, url=url)
        made.append((app, url))
        return app

    yield Engine(name, make)
    workers.stop_all()
    for app, url in made:
        if name == "nats":
            server, _, query = url.partition("?")
            await drop_nats_prefix(server, query.removeprefix("prefix="))
        elif name == "amqp":
            await app.broker.transport.delete_topology()  # type: ignore[attr-defined]
        elif name == "postgres":
            server, _, query = url.partition("?")
            await drop_postgres_schema(server, query.removeprefix("schema="))


async def stats_are(broker: Broker, wanted: list[tuple[str, int, int, int]]) -> bool:
    """True when `queue_stats` reads `wanted` ([] once nothing is queued, scheduled or running)."""
    return await stats(broker) == wanted


async def settled(engine: Engine, app: App) -> None:
    """Every message is acked: at once on Redis and PostgreSQL, which store a result and ack in
    one step; soon on the others, which ack just after the result is stored."""
    if engine.name in ("redis", "postgres"):
        assert await stats(app.broker) == []
    else:
        await eventually(lambda: stats_are(app.broker, []), 10, "every message acked")


async def four_queued(engine: Engine, app: App) -> None:
    """The queue holds four ready messages: at once on Redis, PostgreSQL and NATS; soon on
    SQLite, which settles in batches, and on RabbitMQ, whose message counts lag behind its
    acks."""
    wanted = [("default", 4, 0, 0)]
    if engine.name in ("sqlite", "amqp"):
        await eventually(lambda: stats_are(app.broker, wanted), 10, "four messages queued")
    else:
        assert await stats(app.broker) == wanted


# -- 1. SIGKILL loses nothing -------------------------------------------------------------------


async def test_sigkill_mid_run_hands_tasks_in_flight_to_the_other_worker(
    engine: Engine, workers: Workers
) -> None:
    app = await engine.make()
    victim = workers.start(app, "--max-async-tasks", "4")
    other = workers.start(app, "--max-async-tasks", "4")
    await heartbeating(app, victim.pid, other.pid)
    handles = await app.broker.kiq_many([app.module.work.s(n, 1.0) for n in range(16)])

    def victim_busy() -> bool:
        return len(numbers(app, "started", victim.pid)) > len(numbers(app, "done", victim.pid))

    await eventually(victim_busy, 15, "the first worker running tasks")
    victim.kill()
    killed_at = time.time()
    in_flight = set(numbers(app, "started", victim.pid)) - set(numbers(app, "done", victim.pid))
    assert in_flight, "nothing was running when the worker was killed"

    found = await results(handles, timeout=30)
    assert_succeeded(found)
    assert [r.return_value for r in found] == list(range(16))
    assert set(numbers(app, "done")) == set(range(16))  # every effect recorded
    reruns = [f for f in app.marks("started") if int(f[1]) == other.pid]
    earliest, latest = RERUN_WINDOW[engine.name]
    for n in in_flight:
        again = [float(f[2]) - killed_at for f in reruns if int(f[0]) == n]
        assert again, f"task {n} in flight at the kill was not run again"
        assert earliest < again[0] < latest, (n, again)
        assert pid_of(found[n].worker) == other.pid
    assert other.proc.poll() is None
    await settled(engine, app)
    assert await app.broker.transport.dead_letters() == []


#: Seconds after a new worker starts within which, with the engine's default lease, it has run
#: every task a SIGKILLed worker held (the issue's "about 10 s"; a second more for a slow hour).
RECOVERY_SECONDS = 11.0


async def test_with_default_leases_a_killed_workers_tasks_are_done_within_seconds(
    engine: Engine, workers: Workers
) -> None:
    app = await engine.make(lease=None)
    victim = workers.start(app, "--max-async-tasks", "4")
    await heartbeating(app, victim.pid)
    handles = await app.broker.kiq_many([app.module.work.s(n, 1.0) for n in range(12)])

    def second_batch_running() -> bool:
        done = len(numbers(app, "done", victim.pid))
        return len(numbers(app, "started", victim.pid)) > done >= 4

    await eventually(second_batch_running, 20, "a first batch done, a second running")
    victim.kill()
    in_flight = set(numbers(app, "started", victim.pid)) - set(numbers(app, "done", victim.pid))
    other = workers.start(app, "--max-async-tasks", "4")
    started_at = time.time()
    found = await results(handles, timeout=30)
    assert_succeeded(found)
    assert in_flight, "nothing was running when the worker was killed"
    for n in in_flight:
        assert pid_of(found[n].worker) == other.pid
        took = found[n].finished_at.timestamp() - started_at  # type: ignore[union-attr]  # set
        assert took < RECOVERY_SECONDS, (engine.name, n, took)


# -- 2. lease renewal ----------------------------------------------------------------------------


async def test_task_longer_than_the_lease_runs_once_with_two_workers(
    engine: Engine, workers: Workers
) -> None:
    app = await engine.make(lease=1.0)
    one, two = workers.start(app), workers.start(app)
    await heartbeating(app, one.pid, two.pid)  # both fetch, so either would take a lapsed lease
    m = app.module
    sigs = [m.work.s(1, 4.0), m.work.s(2, 4.0), m.work_sync.s(3, 4.0), m.block.s(4, 4.0)]
    found = await results(await app.broker.kiq_many(sigs), timeout=20)
    assert_succeeded(found)
    assert [r.attempts for r in found] == [1, 1, 1, 1]
    assert sorted(numbers(app, "started")) == [1, 2, 3, 4]  # each ran exactly once, the one
    assert sorted(numbers(app, "done")) == [1, 2, 3, 4]  # blocking its worker's loop too
    assert one.proc.poll() is None
    assert two.proc.poll() is None


# -- 3. SIGTERM drains ----------------------------------------------------------------------------


async def test_sigterm_finishes_running_tasks_and_leaves_the_rest_queued(
    engine: Engine, workers: Workers
) -> None:
    app = await engine.make()
    worker = workers.start(app, "--max-async-tasks", "2")
    await heartbeating(app, worker.pid)
    handles = await app.broker.kiq_many([app.module.work.s(n, 1.0) for n in range(6)])
    await eventually(lambda: len(app.marks("started")) == 2, 15, "two tasks running")
    running = set(numbers(app, "started"))

    start = time.monotonic()
    assert worker.terminate(timeout=10) == 0
    assert time.monotonic() - start < 5
    assert set(numbers(app, "started")) == running  # nothing started after SIGTERM
    assert set(numbers(app, "done")) == running
    for n, handle in enumerate(handles):
        if n in running:
            assert (await handle.wait_result(timeout=5)).status is TaskStatus.SUCCEEDED
        else:
            assert await handle.get_result() is None
            assert await handle.status() is TaskStatus.QUEUED
    await four_queued(engine, app)

    workers.start(app)
    assert_succeeded(await results(handles))
    assert sorted(numbers(app, "done")) == list(range(6))  # each ran once
    await settled(engine, app)
