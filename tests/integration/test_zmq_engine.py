"""The ZeroMQ engine: a real sender (the test) and real `conveyor worker` processes.

The sender binds a PUSH socket on a free port and each worker connects a PULL socket; results
and heartbeats go through a SQLite state file in `tmp_path`, as a user would pair ZeroMQ with
any result store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
import zmq
import zmq.asyncio

from conveyor import BrokerConnectionError, ConfigurationError, ZeroMQBroker, broker_from_url
from conveyor.engines import registry
from conveyor.engines.base import Delivery, Outgoing
from conveyor.engines.sqlite import SqliteResultBackend
from conveyor.engines.zmq import ZmqTransport
from tests.integration.test_worker_processes import (
    assert_succeeded,
    eventually,
    numbers,
    pid_of,
    results,
)
from tests.servers import free_port

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def on_zmq(tmp_path: Path) -> str:
    """A `zmq://` URL on a free port with a SQLite state (and result) store in `tmp_path`."""
    state = quote(f"sqlite:///{tmp_path}/zmq-state.db", safe="")
    return f"zmq://127.0.0.1:{free_port()}?state={state}"


async def test_each_task_runs_once_spread_over_two_workers(
    make_app: Callable[..., Awaitable[App]], workers: Workers, tmp_path: Path
) -> None:
    app = await make_app(url=on_zmq(tmp_path))
    assert isinstance(app.broker, ZeroMQBroker)
    assert isinstance(app.broker.result_backend, SqliteResultBackend)
    one = workers.start(app, "--max-async-tasks", "4")
    two = workers.start(app, "--max-async-tasks", "4")

    async def both_consuming() -> bool:
        return {one.pid, two.pid} <= set(await app.live_workers())

    await eventually(both_consuming, 15, "both workers heartbeating")
    handles = await app.broker.kiq_many([app.module.work.s(n, 0.1) for n in range(24)])
    found = await results(handles, timeout=30)
    assert_succeeded(found)
    assert [r.return_value for r in found] == list(range(24))
    assert sorted(numbers(app, "started")) == list(range(24))  # each ran exactly once
    ran_on = {pid_of(r.worker) for r in found}
    assert ran_on == {one.pid, two.pid}, "the work was not spread over both workers"
    assert min(len(numbers(app, "done", pid)) for pid in ran_on) >= 6  # round-robin, roughly even


async def test_retries_run_inside_the_worker(
    make_app: Callable[..., Awaitable[App]], workers: Workers, tmp_path: Path
) -> None:
    app = await make_app(url=on_zmq(tmp_path))
    worker = workers.start(app)

    async def consuming() -> bool:
        return worker.pid in await app.live_workers()

    await eventually(consuming, 15, "the worker heartbeating")
    result = await (await app.module.flaky.kiq(2)).wait_result(timeout=20)
    assert result.return_value == 3
    assert result.attempts == 3


async def test_a_send_with_no_worker_connected_fails_after_the_timeout() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    transport = registry.open_url(
        "zmq://", zmq_pub_host=address, zmq_sub_host=address, send_timeout=0.3, connect_wait=0.0
    ).transport
    assert transport is not None
    await transport.startup()
    try:
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError, match=address):
            await transport.publish([Outgoing("t1", "q", b"x")])
        assert time.monotonic() - started < 5
    finally:
        await transport.shutdown()


async def test_frames_that_are_no_message_come_back_alone_with_their_problem() -> None:
    port = free_port()
    transport = registry.open_url(f"zmq://127.0.0.1:{port}").transport
    assert transport is not None
    await transport.startup()
    assert await transport.receive([], 1, 0.0) == []  # the worker's PULL socket connects
    context = zmq.asyncio.Context()
    push = context.socket(zmq.PUSH)
    push.bind(f"tcp://127.0.0.1:{port}")  # a foreign sender
    try:
        async with asyncio.timeout(10):
            await push.send_multipart([b"only", b"three", b"parts"])
            await push.send_multipart([b"t1", b"q", b"high", b"0.0", b"x"])
            await push.send_multipart([b"t2", b"q", b"0", b"0.0", b"good"])
        got: list[Delivery] = []
        while len(got) < 3:
            batch = await transport.receive([], 10, 5.0)
            assert batch, f"only {[d.task_id for d in got]} were delivered"
            got += batch
        bad = sorted((d for d in got if d.problem), key=lambda d: d.task_id)
        assert [(d.task_id, d.body) for d in got if not d.problem] == [("t2", b"good")]
        assert [d.task_id for d in bad] == ["", "t1"]
        assert "3 frames" in (bad[0].problem or "")
        assert "high" in (bad[1].problem or "")
        for delivery in bad:
            await transport.dead_letter(delivery, f"malformed entry: {delivery.problem}")
        letters = await transport.dead_letters()
        assert len({letter.task_id for letter in letters}) == 2  # kept apart
        assert sorted(letter.reason for letter in letters) == sorted(
            f"malformed entry: {d.problem}" for d in bad
        )
        await transport.ack([d for d in got if not d.problem])
        assert await transport.queue_stats() == []
    finally:
        push.close(linger=0)
        context.term()
        await transport.shutdown()


def test_url_maps_to_the_seed_parameters() -> None:
    broker = broker_from_url("zmq://worker-host:5599")
    assert isinstance(broker, ZeroMQBroker)
    transport = broker.transport
    assert isinstance(transport, ZmqTransport)
    assert (transport.zmq_pub_host, transport.zmq_sub_host) == (
        "tcp://0.0.0.0:5599",
        "tcp://worker-host:5599",
    )
    assert transport.locates is False  # workers record "running" in the state store
    with pytest.raises(ConfigurationError, match="names no port"):
        broker_from_url("zmq://worker-host")
