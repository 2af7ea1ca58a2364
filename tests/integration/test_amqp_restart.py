"""A RabbitMQ restart mid-run loses no acknowledged send, and admin calls while it is away raise
`BrokerConnectionError`s, on a RabbitMQ node of this module.

The shared test RabbitMQ (`tests/servers.py`) is never stopped: the module starts a private
node (`tests/servers_rabbitmq.py`: its own name, ports, epmd and files) once, for the tests that
need it, stops and starts its RabbitMQ application with `rabbitmqctl -n <its name>`, and halts it
when the module ends, whatever happened. Without RabbitMQ installed, or when the node does not
start, the tests are skipped, or fail when `CI` is set. The worker is a real process started
through the CLI; the test waits on results, marks and logs, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from conveyor import BrokerConnectionError, BrokerError, TaskHandle
from conveyor.engines.base import DeadLetter, Outgoing
from tests.integration.conftest import LEASE
from tests.integration.test_amqp_engine import heartbeating, idle, started, stopped
from tests.integration.test_worker_processes import assert_succeeded, eventually, results
from tests.servers import unique_prefix
from tests.servers_rabbitmq import PrivateRabbitMQ

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def private_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbitMQ]:
    """A started RabbitMQ node of this module (seconds to start, so once); halted at the end,
    by its name and pid, whatever happened."""
    node = PrivateRabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
async def private_app(
    private_rabbitmq: PrivateRabbitMQ, make_app: Callable[..., Awaitable[App]], tmp_path: Path
) -> AsyncIterator[App]:
    """The tasks module on the private node under a fresh prefix, its state in SQLite; its
    queues and exchanges deleted at the end. Request it before `workers`, so the workers stop
    first."""
    state = quote(f"sqlite:///{tmp_path}/amqp-state.db", safe="")
    app = await make_app(
        lease=LEASE, url=f"{private_rabbitmq.url}?prefix={unique_prefix()}&state={state}"
    )
    yield app
    await app.broker.transport.delete_topology()  # type: ignore[attr-defined]


async def _send_until(
    app: App, stop: asyncio.Event, sent: list[TaskHandle[Any]], failed: list[str]
) -> None:
    """Send one task after another until `stop`; keep the handles of sends that returned."""
    n = 0
    while not stop.is_set():
        try:
            sent.append(await app.module.work.kiq(n, 0.01))
            n += 1
        except BrokerError as exc:
            failed.append(str(exc))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.01)


@pytest.mark.timeout(150)
async def test_rabbitmq_restart_mid_run_loses_no_acknowledged_send(
    private_rabbitmq: PrivateRabbitMQ,
    private_app: App,
    workers: Workers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = private_app
    worker = workers.start(app, "--max-async-tasks", "4")
    await heartbeating(app, worker.pid)
    stop = asyncio.Event()
    sent: list[TaskHandle[Any]] = []
    failed: list[str] = []
    producer = asyncio.create_task(_send_until(app, stop, sent, failed))
    await eventually(lambda: len(app.marks("done")) >= 10, 20, "a first part of the tasks done")
    try:
        await asyncio.to_thread(private_rabbitmq.stop_app)
        await eventually(lambda: bool(failed), 20, "a send failing in the outage")
    finally:
        await asyncio.to_thread(private_rabbitmq.start_app)
    before = len(sent)
    await eventually(lambda: len(sent) >= before + 10, 30, "sends going through again")

    # Sends reconnect on a connection of their own. The one that declares and deletes queues
    # (as the fixture does at the end) retries every second on its own: wait for it too.
    def reconnected() -> bool:
        return any(
            r.name == "conveyor.amqp" and str(r.msg).startswith("reconnected to")
            for r in caplog.records
        )

    await eventually(reconnected, 15, "this process's topology connection back")
    stop.set()
    await producer
    assert f"127.0.0.1:{private_rabbitmq.port}" in failed[0]
    assert "guest:guest" not in failed[0]  # the password is hidden
    found = await results(sent, timeout=60)
    assert_succeeded(found)
    assert {r.return_value for r in found} == set(range(len(sent)))
    assert worker.proc.poll() is None  # it rode the outage out
    await eventually(lambda: idle(app), 15, "the index empty")


async def test_admin_calls_while_rabbitmq_is_away_raise_broker_connection_errors(
    private_rabbitmq: PrivateRabbitMQ, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the node's application stopped, the admin calls that need RabbitMQ raise conveyor's
    BrokerConnectionError naming the URL, password hidden (not aio-pika's RuntimeError); those
    that read only the index still answer."""
    state = quote(f"sqlite:///{tmp_path}/amqp-state.db", safe="")
    transport = await started(f"{private_rabbitmq.url}?prefix={unique_prefix()}&state={state}")
    await transport.publish([Outgoing("t1", "q", b"x")])
    letter = DeadLetter("t1", "q", b"x", "why", ref=("q", "t1", 1))
    try:
        await asyncio.to_thread(private_rabbitmq.stop_app)
        calls: list[Callable[[], Awaitable[object]]] = [
            transport.delete_topology,
            transport.dead_letters,
            lambda: transport.drop_dead([letter]),
            lambda: transport.purge("q"),
        ]
        for call in calls:
            with pytest.raises(BrokerConnectionError) as caught:
                await call()
            assert f"127.0.0.1:{private_rabbitmq.port}" in str(caught.value)
            assert "guest:guest" not in str(caught.value)
        assert await transport.locate("t1") == "waiting"  # the index alone
        assert [s.ready for s in await transport.queue_stats()] == [1]
        assert await transport.remove("t1")
    finally:
        await asyncio.to_thread(private_rabbitmq.start_app)

    def reconnected() -> bool:
        return any(str(r.msg).startswith("reconnected to") for r in caplog.records)

    await eventually(reconnected, 15, "the topology connection back")
    await stopped(transport)
