"""Redis behind Sentinel and as a Cluster: private servers on free ports, real tasks through them.

Each test starts its own `redis-server` processes (by pid, under tmp_path, stopped afterwards),
so the shared Redis on 6379 is never reconfigured. The failover tests SIGKILL a primary that a
Sentinel watches with one replica: a worker process and the producer must follow the promoted
replica, and what asynchronous replication loses (a write only the dead primary held) is shown,
with `min-replicas-to-write` turning that silent loss into an error of the send. They wait on
marks, results and what `redis-cli` reports (replication offsets, the Sentinel's primary).
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conveyor import Broker, BrokerError, RedisBroker, TaskStatus
from conveyor.engines.redis import RedisTransport
from conveyor.testing import worker
from tests.integration.test_redis_engine import heartbeating
from tests.integration.test_worker_processes import eventually, numbers
from tests.servers import free_port, unique_prefix

if TYPE_CHECKING:  # fixtures' types; pytest loads the conftest itself
    from tests.integration.conftest import App, Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _redis_cli(*args: str) -> str:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is needed to set up a cluster"
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def _port_with_bus() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = random.randint(20000, 30000)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise AssertionError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _Servers:
    """redis-server processes of one test, by port; stopped (by pid) at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> int:
        """Start `redis-server *args` on a free port, its files in `root/name`."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        port = _port_with_bus() if "--cluster-enabled" in args else free_port()
        where = self.root / name
        where.mkdir(parents=True)
        argv = [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(where)]
        argv += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[port] = proc
        _wait_until(lambda: "PONG" in _redis_cli("-p", str(port), "ping"), f"{name} up")
        return port

    def kill(self, port: int) -> None:
        """SIGKILL the server on `port`: no shutdown, no last write to anyone."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[_Servers]:
    made = _Servers(tmp_path)
    yield made
    made.stop()


async def _exercise(broker: Broker) -> None:
    """Tasks on two queues, with a priority, a delay, a retry and a stream, through a worker;
    then state store keys read many at a time."""

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task(queue="other", priority=9)
    async def shout(text: str) -> str:
        return text.upper()

    failures = {"left": 1}

    @broker.task(retries=2, retry_delay=0.05)
    async def flaky() -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("once")
        return "ok"

    @broker.task
    async def count(n: int) -> object:
        for i in range(n):
            yield i

    async with worker(broker, queues="default,other"):
        handles = [await add.kiq(i, 1) for i in range(20)]
        late = await add.kicker().with_delay(0.2).kiq(40, 2)
        loud = await shout.kiq("hi")
        retried = await flaky.kiq()
        streamed = await count.kiq(3)
        results = await asyncio.gather(*(h.wait_result(timeout=20) for h in handles))
        assert [r.return_value for r in results] == [i + 1 for i in range(20)]
        assert (await late.wait_result(timeout=20)).return_value == 42
        assert (await loud.wait_result(timeout=20)).return_value == "HI"
        flaky_result = await retried.wait_result(timeout=20)
        assert (flaky_result.return_value, flaky_result.attempts) == ("ok", 2)
        assert [item async for item in streamed.stream()] == [0, 1, 2]
        assert await streamed.status() is TaskStatus.SUCCEEDED
        assert await broker.transport.queue_stats() == []
    transport = broker.transport
    assert isinstance(transport, RedisTransport)
    assert not await transport.client.call("SMEMBERS", transport.client.key("queues")), "forgotten"
    keys = [f"key{i}" for i in range(8)]  # in several slots of a Cluster
    for key in keys[:6]:
        await broker.store.set(key, key.encode())
    assert await broker.store.get_many(keys) == [k.encode() for k in keys[:6]] + [None, None]
    assert await broker.store.scan("key") == {k: k.encode() for k in keys[:6]}


async def test_sentinel_url_finds_the_primary(servers: _Servers, tmp_path: Path) -> None:
    primary = servers.start("primary")
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor mymaster 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    sentinel = servers.start("sentinel", str(conf), "--sentinel")
    _wait_until(
        lambda: (
            str(primary)
            in _redis_cli("-p", str(sentinel), "sentinel", "get-master-addr-by-name", "mymaster")
        ),
        "sentinel knows the primary",
    )
    broker = RedisBroker(f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0?prefix=sent")
    async with broker:
        await _exercise(broker)
    assert "sent:" in _redis_cli("-p", str(primary), "--scan", "--pattern", "sent:*")


async def test_cluster_url_keeps_each_queue_in_one_slot(servers: _Servers) -> None:
    ports = [servers.start(f"node{i}", "--cluster-enabled", "yes") for i in range(3)]
    nodes = [f"127.0.0.1:{port}" for port in ports]
    out = _redis_cli("--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")
    assert "All 16384 slots covered" in out, out
    _wait_until(
        lambda: all(
            "cluster_state:ok" in _redis_cli("-p", str(p), "cluster", "info") for p in ports
        ),
        "cluster ok",
    )
    broker = RedisBroker(f"redis+cluster://127.0.0.1:{ports[0]}/0?prefix=clu", lease_seconds=5)
    async with broker:
        await _exercise(broker)
        slots = {
            _redis_cli("-p", str(ports[0]), "cluster", "keyslot", f"clu:{{default}}:{suffix}")
            for suffix in ("s:0", "s:9", "ids", "delayed", "dead")
        }
        assert len(slots) == 1


# -- a Sentinel failover --------------------------------------------------------------------------


@dataclass
class _Watched:
    """A primary, its replica and one Sentinel watching them (quorum 1)."""

    servers: _Servers
    primary: int
    replica: int
    sentinel: int

    def url(self, prefix: str) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel}/mymaster/0?prefix={prefix}"

    def named(self) -> int:
        """The port of the primary the Sentinel names now."""
        reply = _redis_cli(
            "-p", str(self.sentinel), "sentinel", "get-master-addr-by-name", "mymaster"
        )
        return int(reply.split()[1])

    async def failed_over(self) -> None:
        """Wait until the Sentinel names the replica as the primary (what clients see)."""

        async def switched() -> bool:
            return await asyncio.to_thread(self.named) == self.replica

        await eventually(switched, 20, "the Sentinel naming the replica the primary")


def _watched(servers: _Servers, root: Path, down_after_ms: int, *primary_args: str) -> _Watched:
    """Start a primary (with `primary_args`), a replica in sync with it and a Sentinel that
    knows both and fails over once the primary has not answered for `down_after_ms`."""
    at_once = ("--repl-diskless-sync-delay", "0")  # the replica syncs now, not in 5 s
    primary = servers.start("primary", *at_once, *primary_args)
    replica = servers.start("replica", "--replicaof", "127.0.0.1", str(primary))
    conf = root / "failover-sentinel.conf"
    conf.write_text(
        f"sentinel monitor mymaster 127.0.0.1 {primary} 1\n"
        f"sentinel down-after-milliseconds mymaster {down_after_ms}\n"
        "sentinel failover-timeout mymaster 5000\n"
    )
    sentinel = servers.start("sentinel", str(conf), "--sentinel")
    _wait_until(lambda: "master_link_status:up" in _info(replica), "the replica in sync")

    def knows_replica() -> bool:
        words = _redis_cli("-p", str(sentinel), "sentinel", "replicas", "mymaster").split()
        return str(replica) in words and "slave" in words

    _wait_until(knows_replica, "the Sentinel knowing the replica")
    return _Watched(servers, primary, replica, sentinel)


def _info(port: int) -> str:
    return _redis_cli("-p", str(port), "info", "replication")


async def _replicated(watched: _Watched) -> None:
    """Wait until the replica has every write the primary has made so far."""

    def offset(port: int, field: str) -> int:
        found = re.search(rf"{field}:(\d+)", _info(port))
        return int(found[1]) if found else -1

    target = await asyncio.to_thread(offset, watched.primary, "master_repl_offset")

    async def caught_up() -> bool:
        return await asyncio.to_thread(offset, watched.replica, "slave_repl_offset") >= target

    await eventually(caught_up, 10, "the replica caught up")


@pytest.fixture
async def failover_app(
    servers: _Servers, tmp_path: Path, make_app: Callable[..., Awaitable[App]], down_after_ms: int
) -> AsyncIterator[tuple[_Watched, App]]:
    """A watched primary and replica, and the tasks app on them through the Sentinel."""
    watched = _watched(servers, tmp_path, down_after_ms)
    prefix = unique_prefix()
    app = await make_app(url=watched.url(prefix), lease=None)  # 8 s: 1.5 failovers
    yield watched, app
    # `make_app` drops the app's keys through a plain URL: the primary's now
    app.url = f"redis://127.0.0.1:{watched.named()}/0?prefix={prefix}"


def _started_after(app: App, moment: float) -> list[float]:
    """When the tasks that started after `moment` (a `time.time()`) started."""
    return sorted(float(f[2]) for f in app.marks("started") if float(f[2]) > moment)


async def _drained(broker: Broker) -> bool:
    """True once no queue holds a waiting, delayed or running message."""
    return await broker.transport.queue_stats() == []


@pytest.mark.parametrize("down_after_ms", [1000, 4000])  # 4 s: past a command's 3 s of retries
async def test_sentinel_failover_mid_run_loses_no_replicated_task(
    failover_app: tuple[_Watched, App], workers: Workers
) -> None:
    watched, app = failover_app
    worker = workers.start(app, "--max-async-tasks", "4")
    await heartbeating(app, worker.pid)
    count = 120
    sigs = [app.module.work.s(n, 0.05 + n % 6 / 100) for n in range(count)]
    handles = await app.broker.kiq_many(sigs)
    waits = [asyncio.create_task(h.wait_result(timeout=40)) for h in handles]
    await eventually(lambda: len(app.marks("done")) >= 20, 20, "a first part of the tasks done")
    await _replicated(watched)  # every send is on the replica: only acks can be lost

    killed_at = time.time()
    watched.servers.kill(watched.primary)  # SIGKILL by pid, with tasks running
    await watched.failed_over()
    switched_at = time.time()
    await eventually(lambda: bool(_started_after(app, killed_at)), 20, "a task started again")
    resumed_at = _started_after(app, killed_at)[0]
    await eventually(lambda: _drained(app.broker), 20, "the new primary holding no task")
    done = numbers(app, "done")
    lost, twice = set(range(count)) - set(done), len(done) - len(set(done))
    print(
        f"failover {switched_at - killed_at:.1f} s, tasks again {resumed_at - killed_at:.1f} s"
        f" after the kill; lost {len(lost)}, ran twice {twice}"
    )
    assert not lost  # every send reached the replica before the kill
    assert twice <= 4  # a lost ack each: at most the tasks acked as the primary died
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    failed = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    assert not failed, f"wait_result did not ride the failover out: {failed[:3]}"
    assert [getattr(r, "return_value", None) for r in outcomes] == list(range(count))
    assert worker.proc.poll() is None  # it followed the new primary without a restart
    assert " ERROR " not in worker.stderr()  # no settle gave up: no "worker error while running"
    assert await app.broker.transport.dead_letters() == []
    after = await (await app.module.add.kiq(2, 3)).wait_result(timeout=15)
    assert after.return_value == 5  # the producer sends again too


# -- what asynchronous replication cannot promise -------------------------------------------------


def _cut_off(watched: _Watched) -> None:
    """Cut the replica's link to the primary for good (it keeps failing to authenticate), and
    wait until the primary sees it gone."""
    replica = str(watched.replica)
    for option, value in (("masteruser", "nobody"), ("masterauth", "nope")):
        _redis_cli("-p", replica, "config", "set", option, value)
    _redis_cli("-p", replica, "client", "kill", "type", "master")
    _wait_until(lambda: "connected_slaves:0" in _info(watched.primary), "the replica cut off")


@pytest.mark.parametrize("min_replicas", [0, 1], ids=["default", "min-replicas-to-write"])
async def test_a_send_only_the_dead_primary_held_is_lost_unless_min_replicas_refuses_it(
    servers: _Servers, tmp_path: Path, min_replicas: int
) -> None:
    strict = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
    watched = _watched(servers, tmp_path, 1000, *(strict if min_replicas else ()))
    broker = RedisBroker(watched.url("lag"))

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with broker:
        kept = await broker.kiq_many([add.s(i, 1) for i in range(5)])
        await _replicated(watched)
        await asyncio.to_thread(_cut_off, watched)  # a network split, say
        if min_replicas:
            with pytest.raises(BrokerError, match="NOREPLICAS"):  # the producer is told
                await add.kiq(9, 9)
        else:
            late = await add.kiq(9, 9)  # acknowledged by the primary alone
            assert await broker.transport.locate(late.task_id) == "waiting"
        watched.servers.kill(watched.primary)
        await watched.failed_over()
        assert [await broker.transport.locate(h.task_id) for h in kept] == ["waiting"] * 5
        if not min_replicas:
            assert await broker.transport.locate(late.task_id) is None  # gone without a word
