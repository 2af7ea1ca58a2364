"""Redis behind Sentinel and as a Cluster: private servers on free ports, real tasks through them.

Each test starts its own `redis-server` processes (by pid, under tmp_path, stopped afterwards),
so the shared Redis on 6379 is never reconfigured.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor import Broker, RedisBroker, TaskStatus
from conveyor.engines.redis import RedisTransport
from conveyor.testing import worker
from tests.servers import free_port

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
    """redis-server processes of one test, stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> int:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        port = _port_with_bus() if "--cluster-enabled" in args else free_port()
        where = self.root / name
        where.mkdir(parents=True)
        argv = [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(where)]
        argv += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        _wait_until(lambda: "PONG" in _redis_cli("-p", str(port), "ping"), f"{name} up")
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
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
