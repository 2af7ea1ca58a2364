"""The Redis engine's own connections (`_resp`, `_bare`) against real servers: passwords,
databases, Unix sockets, a server that forgot the scripts, and pub/sub through a dropped
connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from conveyor import BrokerError, RedisBroker
from conveyor.engines.redis import RedisClient, RedisTransport
from conveyor.testing import worker
from tests.servers import PrivateRedis, drop_prefix, free_port, redis_url, unique_prefix

PASSWORD = "s3cr#t/pw"


async def round_trip(broker: RedisBroker) -> None:
    """Send a task through a worker in this loop and read its result back."""

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with broker, worker(broker):
        handle = await add.kiq(20, 22)
        assert (await handle.wait_result(timeout=10)).return_value == 42


@contextlib.asynccontextmanager
async def started_client() -> AsyncIterator[RedisClient]:
    """The connection of a started broker on the test Redis, under a prefix of its own."""
    url, prefix = redis_url(), unique_prefix()
    broker = RedisBroker(url, prefix=prefix)
    assert isinstance(broker.transport, RedisTransport)
    try:
        async with broker:
            yield broker.transport.client
    finally:
        drop_prefix(url, prefix)


def keys_of(url: str, prefix: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter(match=f"{prefix}:*"))
    finally:
        client.close()


async def test_password_and_database(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis", free_port(), extra=["--requirepass", PASSWORD])
    server.start()
    try:
        url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}/3"
        await round_trip(RedisBroker(url, prefix="pw"))
        assert keys_of(url, "pw"), "the keys are in database 3"
        assert not keys_of(url.replace("/3", "/0"), "pw")

        wrong = RedisBroker(f"redis://:wrong@127.0.0.1:{server.port}/0", prefix="pw")
        with pytest.raises(BrokerError) as failure:
            await wrong.startup()
        assert "wrong" not in str(failure.value)
        assert "***" in str(failure.value)
        await wrong.shutdown()
    finally:
        server.stop()


async def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    extra = ["--unixsocket", str(path), "--unixsocketperm", "700"]
    server = PrivateRedis(tmp_path / "redis", free_port(), extra=extra)
    server.start()
    try:
        await round_trip(RedisBroker(f"unix://{path}?db=2", prefix="sock"))
        assert keys_of(f"unix://{path}?db=2", "sock")
    finally:
        server.stop()


async def test_scripts_are_loaded_again_after_a_script_flush() -> None:
    import redis

    url, prefix = redis_url(), unique_prefix()
    broker = RedisBroker(url, prefix=prefix)

    @broker.task
    async def echo(x: int) -> int:
        return x

    try:
        async with broker, worker(broker):
            assert (await (await echo.kiq(1)).wait_result(timeout=10)).return_value == 1
            client = redis.Redis.from_url(url)
            client.script_flush()
            client.close()
            assert (await (await echo.kiq(2)).wait_result(timeout=10)).return_value == 2
    finally:
        drop_prefix(url, prefix)


async def test_a_waiter_is_woken_after_its_pubsub_connection_was_killed() -> None:
    import redis

    url, prefix = redis_url(), unique_prefix()
    broker = RedisBroker(url, prefix=prefix)
    try:
        async with broker:
            waiting = asyncio.create_task(broker.result_backend.wait_result("t1", timeout=20))
            await asyncio.sleep(0)  # the waiter subscribes
            client = redis.Redis.from_url(url)
            for _ in range(100):  # wait until its subscription is there, then drop it
                if client.pubsub_numsub(f"{prefix}:done:t1")[0][1]:
                    break
                await asyncio.sleep(0.02)
            client.client_kill_filter(_type="pubsub")
            await broker.result_backend.set_result("t1", b"done", 60)
            assert await asyncio.wait_for(waiting, 10) == b"done"
            client.close()
    finally:
        drop_prefix(url, prefix)


async def test_a_command_that_cannot_be_encoded_fails_only_its_caller() -> None:
    async with started_client() as client:
        key = client.key("kv", "encodable")
        with pytest.raises(TypeError, match="cannot send 'SET'"):  # alone, written at once
            await client.call("SET", key, None)
        first = client.call("SET", key, b"0")  # the idle connection writes this one at once
        good = client.call("SET", key, b"1")  # these two share the next write
        bad = client.call("SET", key, None)
        with pytest.raises(TypeError, match="cannot send 'SET'"):
            await bad
        assert [await first, await good] == [b"OK", b"OK"]
        assert await client.call("GET", key) == b"1"


async def test_commands_of_one_turn_keep_their_order() -> None:
    """The first command on an idle connection is written at once and the rest of the turn in
    one later write: Redis still runs them in the order they were issued."""
    async with started_client() as client:
        key = client.key("kv", "counter")
        counts = await asyncio.gather(*(client.call("INCR", key) for _ in range(50)))
        assert counts == list(range(1, 51))
