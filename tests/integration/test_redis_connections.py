"""The Redis engine's own connections (`conveyor.drivers.resp`, `_bare`) against real servers:
passwords, databases, Unix sockets, a server that forgot the scripts, pub/sub through a dropped
connection (and redis-py's, `_py`, through a restart), and every way a URL can fail to
connect, seen through the CLI (SPEC §7)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from conveyor import BrokerConnectionError, BrokerError, RedisBroker
from conveyor._urls import safe_url
from conveyor.engines.redis import RedisClient, RedisTransport
from conveyor.engines.redis._py import PyLoopClient
from conveyor.testing import worker
from tests.integration.test_worker_processes import eventually
from tests.servers import (
    PrivateRedis,
    PrivateServer,
    drop_prefix,
    free_port,
    redis_url,
    unique_prefix,
)

PASSWORD = "s3cr#t/pw"
WRONG = "wr0ng#pass/word"


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


async def test_redis_py_pubsub_is_reconnected_by_its_listener_alone(tmp_path: Path) -> None:
    """Watches that come and go while redis-py's pub/sub connection (TLS, Sentinel and Cluster
    URLs) is down, or reconnecting to a server that holds its replies, neither reconnect it
    themselves nor read it: before, each reconnected it, and they read one stream together
    ("read() called while another coroutine is already waiting", from an unwatch in a
    `wait_result`) or opened sockets that were never closed. A watch fails fast while the
    connection is down (`wait_result` then reads the result again and again)."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    client = PyLoopClient(RedisClient(server.url), asyncio.get_running_loop())  # any URL works
    heard: dict[bytes, asyncio.Event] = {}

    def hear(channel: bytes) -> Callable[[bytes], None]:
        heard[channel] = asyncio.Event()
        return lambda _: heard[channel].set()

    old, new = [b"old%d" % i for i in range(20)], [b"new%d" % i for i in range(20)]
    callbacks = {channel: hear(channel) for channel in old + new}
    kept = old[10:]
    try:
        for channel in old:
            await client.watch(channel, callbacks[channel])
        server.stop()
        await eventually(lambda: not client.pubsub.connection.is_connected, 10, "the loss seen")
        server.start()
        pause = ["redis-cli", "-p", str(server.port), "client", "pause", "1000", "all"]
        # blocking on purpose: the client does nothing before every reply is held back
        subprocess.run(pause, check=True, capture_output=True)  # noqa: ASYNC221
        outcomes = await asyncio.gather(
            *(client.unwatch(channel, callbacks[channel]) for channel in old[:10]),
            *(client.watch(channel, callbacks[channel]) for channel in new),
            return_exceptions=True,
        )
        unexpected = [o for o in outcomes if o is not None and type(o) is not BrokerConnectionError]
        assert not unexpected, unexpected[:3]
        for channel in new:  # every watch is made once the listener has reconnected
            if channel not in client.watchers:
                await eventually(functools.partial(watched, client, channel, callbacks[channel]))

        async def delivered() -> bool:
            for channel in kept + new:
                await client.call("PUBLISH", channel, b"x")
            every = asyncio.gather(*(heard[channel].wait() for channel in kept + new))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(every, 1.0)
            return all(heard[channel].is_set() for channel in kept + new)

        await eventually(delivered, 10, "every watched channel heard")
        assert not any(heard[channel].is_set() for channel in old[:10])
        gc.collect()  # a socket opened and dropped unclosed warns now (an error under pytest)
    finally:
        await client.close()
        server.stop()


async def watched(client: PyLoopClient, channel: bytes, callback: Callable[[bytes], None]) -> bool:
    """Whether `client.watch` succeeds now (not while its pub/sub connection is down)."""
    try:
        await client.watch(channel, callback)
    except BrokerConnectionError:
        return False
    return True


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


# -- URLs that cannot connect -------------------------------------------------------------------

#: Every way a Redis URL can fail to connect. {free} is a port nothing listens on, {redis} the
#: host:port of the test Redis (no TLS, no password, not a Sentinel), {sentinel} a Sentinel
#: that knows no primary, {locked} a Redis whose password is `PASSWORD`, {wrong} another one.
#: `socket_connect_timeout` (a redis-py option) cuts the 5 s that a TLS handshake with a plain
#: port waits to 1 s.
UNREACHABLE = {
    "refused": "redis://127.0.0.1:{free}/0",
    "refused, TLS": "rediss://127.0.0.1:{free}/0",
    "TLS to a plain port": "rediss://{redis}/15?socket_connect_timeout=1",
    "unknown host": "redis://no-such-host.invalid:6379/0",
    "unknown host, TLS": "rediss://no-such-host.invalid:6379/0",
    "no Sentinel answers": "redis+sentinel://127.0.0.1:{free}/mymaster",
    "not a Sentinel": "redis+sentinel://{redis}/mymaster",
    "a Sentinel without that primary": "redis+sentinel://127.0.0.1:{sentinel}/mymaster",
    "no Cluster node": "redis+cluster://127.0.0.1:{free}",
    "wrong password": "redis://nobody:{wrong}@{redis}/15",
    "wrong password, then SELECT refused": "redis://:{wrong}@127.0.0.1:{locked}/3",
    "no password": "redis://127.0.0.1:{locked}/0",
}

#: The app module the CLI loads: a broker on `CONVEYOR_BROKER_URL` and one task.
APP = """
from conveyor import broker_from_url

broker = broker_from_url()


@broker.task("add")
async def add(x: int, y: int) -> int:
    return x + y
"""


class LoneSentinel(PrivateServer):
    """A Redis Sentinel of one test that monitors no primary."""

    binary = "redis-server"

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/mymaster"

    def argv(self, binary: str) -> list[str]:
        conf = self.root / "sentinel.conf"  # a Sentinel rewrites its configuration file
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\n")
        return [binary, str(conf), "--sentinel"]


def unreachable_url(template: str, root: Path, servers: contextlib.ExitStack) -> str:
    """`template` filled in, starting the servers it names (stopped by `servers`)."""
    ports: dict[str, int] = {}
    kinds: dict[str, Callable[[], PrivateServer]] = {
        "sentinel": lambda: LoneSentinel(root / "sentinel"),
        "locked": lambda: PrivateRedis(root / "locked", extra=["--requirepass", PASSWORD]),
    }
    for name, make in kinds.items():
        if f"{{{name}}}" in template:
            server = make()
            server.start()
            servers.callback(server.stop)
            ports[name] = server.port
    redis = urlsplit(redis_url())
    return template.format(
        free=free_port(),
        redis=f"{redis.hostname}:{redis.port or 6379}",
        wrong=quote(WRONG, safe=""),
        **ports,
    )


async def conveyor(root: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m conveyor *args` run to its end in `root`, on the broker at `url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_BROKER_URL=url, PYTHONDONTWRITEBYTECODE="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor", *args, cwd=root, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("how", list(UNREACHABLE))
async def test_a_url_that_cannot_connect_is_one_line_and_exit_code_2(
    how: str, tmp_path: Path
) -> None:
    """SPEC §7: `info` and `send` print one line naming the URL, password hidden, and exit 2;
    no traceback, no "Future exception was never retrieved", no "Task was destroyed". In a
    program, `startup` raises `BrokerConnectionError` with that line."""
    (tmp_path / "app.py").write_text(APP)
    with contextlib.ExitStack() as servers:
        url = unreachable_url(UNREACHABLE[how], tmp_path, servers)
        broker = RedisBroker(url)
        *runs, failure = await asyncio.gather(
            conveyor(tmp_path, url, "info", "app:broker"),
            conveyor(tmp_path, url, "send", "app:broker", "add", "--args", "[1, 2]"),
            broker.startup(),
            return_exceptions=True,
        )
    await broker.shutdown()
    said = f"cannot reach Redis at {safe_url(url)}: "
    assert isinstance(failure, BrokerConnectionError), repr(failure)
    assert str(failure).startswith(said), failure
    for done in runs:
        assert isinstance(done, subprocess.CompletedProcess), done
        shown = (
            f"{done.args}: exit {done.returncode}, stdout={done.stdout!r}, stderr={done.stderr!r}"
        )
        assert (done.returncode, done.stdout) == (2, ""), shown
        # One line naming the URL; its cause may differ between processes (a lookup of an
        # unknown host ends in an error or, on a loaded machine, in the connect timeout).
        [line] = done.stderr.splitlines()
        assert line.startswith(f"conveyor: error: {said}"), shown
        assert WRONG not in done.stderr, shown
        assert quote(WRONG, safe="") not in done.stderr, shown
