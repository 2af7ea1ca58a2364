"""Queue names do not pile up on Redis: a queue that holds nothing (nothing waiting, delayed,
leased or dead-lettered) leaves `P:queues` and keeps no key, so `queue_stats` costs the live
queues only, and a publish racing with that forget never loses its queue from the set.

Each test has its own key prefix on the test Redis, deleted afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from conveyor.engines.base import Delivery, Outgoing, QueueStats
from conveyor.engines.redis import RedisTransport, open_engine
from tests.servers import drop_prefix, redis_url, unique_prefix

#: One-off queue names published to, one message each.
ONE_OFF = 2000


@pytest.fixture
async def place() -> AsyncIterator[tuple[str, str]]:
    """The test Redis URL and a key prefix of this test, whose keys are deleted afterwards."""
    url, prefix = redis_url(), unique_prefix()
    yield url, prefix
    drop_prefix(url, prefix)


async def transport_at(url: str, prefix: str) -> RedisTransport:
    """A started transport on its own connection."""
    transport = open_engine(url, prefix=prefix).transport
    assert isinstance(transport, RedisTransport)
    await transport.startup()
    return transport


async def receive_one(transport: RedisTransport, queue: str) -> Delivery:
    (delivery,) = await transport.receive([queue], 1, 5)
    return delivery


async def left_behind(url: str, prefix: str) -> tuple[set[str], set[str]]:
    """The queues that own keys under `prefix` ("queues" for the set of queues itself), and
    the queues that set lists."""
    client: Any = aioredis.Redis.from_url(url)
    try:
        keys = [key.decode() async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        listed = {key.decode() for key in await client.smembers(f"{prefix}:queues")}
    finally:
        await client.aclose()
    return {key.removeprefix(f"{prefix}:").split("}")[0].lstrip("{") for key in keys}, listed


@pytest.mark.parametrize("how", ["purge", "drain"])
async def test_queues_that_hold_nothing_are_forgotten(how: str, place: tuple[str, str]) -> None:
    transport = await transport_at(*place)
    try:
        await transport.publish([Outgoing("held", "live", b"x"), Outgoing("lost", "failing", b"x")])
        held = await receive_one(transport, "live")  # leased: "live" stays
        await transport.dead_letter(await receive_one(transport, "failing"), "boom")  # stays too
        once = [f"once-{i}" for i in range(ONE_OFF)]
        await transport.publish([Outgoing(f"t{i}", queue, b"x") for i, queue in enumerate(once)])
        assert len(await transport.queue_stats()) == ONE_OFF + 1
        if how == "purge":
            assert await transport.purge() == ONE_OFF
        else:  # a worker's fetch also makes every band's stream and group, to block on
            got = await transport.receive(once, ONE_OFF, 0)
            assert len(got) == ONE_OFF
            await transport.ack(got)

        assert await transport.queue_stats() == [QueueStats("live", running=1)]
        live = {"live", "failing"}
        assert await left_behind(*place) == (live | {"queues"}, live)

        await transport.ack([held])
        assert await transport.drop_dead(await transport.dead_letters()) == 1
        assert await transport.queue_stats() == []
        assert await left_behind(*place) == (set(), set())
    finally:
        await transport.shutdown()


#: The command of `queue_stats` at whose sending the racing publish starts, one per round.
STEPS = ("SMEMBERS", "stats", "SREM", "forget")


async def test_a_publish_racing_with_a_forget_keeps_its_queue_listed(
    place: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round `queue_stats` forgets the drained queue "q" while a producer on another
    connection publishes to it, starting as `queue_stats` sends one of its steps: whatever the
    order Redis runs them in, "q" holds the message and is listed afterwards."""
    producer, admin = await transport_at(*place), await transport_at(*place)
    client, step, reached = admin.client, STEPS[0], asyncio.Event()
    send = client.call

    def watched(*command: Any) -> asyncio.Future[Any]:
        name = client.scripts.name_of.get(command[1]) if command[0] == "EVALSHA" else command[0]
        if name == step:
            reached.set()
        return send(*command)

    monkeypatch.setattr(client, "call", watched)

    try:
        await producer.publish([Outgoing("first", "q", b"x")])  # "q" is known ...
        await admin.ack([await receive_one(admin, "q")])  # ... and drained
        for n in range(len(STEPS) * 8):
            step = STEPS[n % len(STEPS)]
            reached.clear()
            stats = asyncio.ensure_future(admin.queue_stats())
            waiting = asyncio.ensure_future(reached.wait())
            await asyncio.wait([stats, waiting], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            assert reached.is_set(), f"queue_stats sent no {step}: it kept the drained queue"
            await producer.publish([Outgoing(f"t{n}", "q", b"x")])
            await stats
            assert await admin.queue_stats() == [QueueStats("q", ready=1)], f"round {n}: {step}"
            await admin.ack([await receive_one(admin, "q")])
        assert await admin.queue_stats() == []
        assert await left_behind(*place) == (set(), set())
    finally:
        await admin.shutdown()
        await producer.shutdown()
