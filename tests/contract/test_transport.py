"""The `MessageTransport` contract, run against every engine (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor.engines.base import (
    DeadLetter,
    Delivery,
    Engine,
    MessageTransport,
    Outgoing,
    QueueStats,
)

pytestmark = pytest.mark.timeout(30)

#: The `make_transport` fixture: `await make_transport(lease_seconds=...)` -> a started transport.
TransportFactory = Callable[..., Awaitable[MessageTransport]]


def out(
    task_id: str,
    queue: str = "q",
    *,
    body: bytes | None = None,
    priority: int = 0,
    eta: float | None = None,
) -> Outgoing:
    return Outgoing(task_id, queue, body or task_id.encode(), priority, eta)


async def receive_one(
    transport: MessageTransport, queue: str = "q", timeout: float = 5.0
) -> Delivery:
    got = await transport.receive([queue], 1, timeout)
    assert len(got) == 1, f"nothing delivered from {queue!r} within {timeout}s"
    return got[0]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- publish, receive, ack --------------------------------------------------------------------


async def test_publish_receive_ack(transport: MessageTransport) -> None:
    await transport.publish([out("t1", body=b"payload")])
    delivery = await receive_one(transport)
    assert (delivery.task_id, delivery.queue, delivery.body) == ("t1", "q", b"payload")
    assert delivery.deliveries == 1
    await transport.ack([delivery])
    assert await transport.locate("t1") is None
    assert await transport.receive(["q"], 1, 0.05) == []


async def test_receive_returns_at_most_max_count(transport: MessageTransport) -> None:
    await transport.publish([out(f"t{i}") for i in range(5)])
    first = await transport.receive(["q"], 3, 1.0)
    second = await transport.receive(["q"], 10, 1.0)
    assert len(first) == 3
    assert len(second) == 2
    assert {d.task_id for d in first + second} == {f"t{i}" for i in range(5)}


async def test_receive_waits_for_timeout_when_empty(transport: MessageTransport) -> None:
    started = time.monotonic()
    assert await transport.receive(["q"], 1, 0.2) == []
    assert 0.15 <= time.monotonic() - started < 2.0


async def test_receive_wakes_when_a_message_is_published(transport: MessageTransport) -> None:
    waiting = asyncio.create_task(transport.receive(["q"], 1, 10.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    await transport.publish([out("t1")])
    got = await asyncio.wait_for(waiting, 5.0)
    assert [d.task_id for d in got] == ["t1"]
    assert time.monotonic() - started < 1.0


async def test_receive_reads_only_the_queues_asked_for(transport: MessageTransport) -> None:
    await transport.publish(
        [out("a1", "a", priority=1), out("b1", "b", priority=5), out("c1", "c")]
    )
    got = await transport.receive(["a", "b"], 10, 1.0)
    assert [(d.task_id, d.queue) for d in got] == [("b1", "b"), ("a1", "a")]
    assert await transport.locate("c1") == "waiting"


async def test_no_queues_means_every_queue(transport: MessageTransport) -> None:
    await transport.publish([out("a1", "a"), out("b1", "b", priority=2)])
    got = await transport.receive([], 10, 1.0)
    assert [d.task_id for d in got] == ["b1", "a1"]


async def test_higher_priority_first_then_older(transport: MessageTransport) -> None:
    for message in [out("low"), out("mid1", priority=5), out("high", priority=9)]:
        await transport.publish([message])
    await transport.publish([out("mid2", priority=5), out("mid3", priority=5)])
    got = await transport.receive(["q"], 10, 1.0)
    assert [d.task_id for d in got] == ["high", "mid1", "mid2", "mid3", "low"]


async def test_eta_is_not_delivered_early(transport: MessageTransport) -> None:
    eta = time.time() + 0.4
    await transport.publish([out("later", eta=eta), out("now")])
    assert [d.task_id for d in await transport.receive(["q"], 10, 0.1)] == ["now"]
    assert await transport.locate("later") == "delayed"
    delivery = await receive_one(transport)
    assert delivery.task_id == "later"
    assert time.time() >= eta


async def test_publishing_a_held_task_id_again_is_ignored(transport: MessageTransport) -> None:
    await transport.publish([out("t1", body=b"first")])
    await transport.publish([out("t1", body=b"second")])
    got = await transport.receive(["q"], 10, 1.0)
    assert [(d.task_id, d.body) for d in got] == [("t1", b"first")]


async def test_a_publish_from_another_thread_wakes_a_receive(transport: MessageTransport) -> None:
    waiting = asyncio.create_task(transport.receive(["q"], 1, 10.0))
    await asyncio.sleep(0.05)
    # Timed from the publish's return: a loop of its own may first open its connection (RabbitMQ
    # took over 1 s for that on a loaded machine), which is not the wake-up being tested.
    await asyncio.to_thread(asyncio.run, transport.publish([out("t1")]))
    published = time.monotonic()
    assert [d.task_id for d in await asyncio.wait_for(waiting, 5.0)] == ["t1"]
    assert time.monotonic() - published < 1.0


async def test_usable_from_one_event_loop_after_another(transport: MessageTransport) -> None:
    assert await transport.receive(["q"], 1, 0.02) == []

    async def elsewhere() -> str:
        assert await transport.receive(["q"], 1, 0.02) == []
        await transport.publish([out("t1")])
        return (await receive_one(transport)).task_id

    assert await asyncio.to_thread(asyncio.run, elsewhere()) == "t1"
    await transport.publish([out("t2")])
    assert (await receive_one(transport)).task_id == "t2"


# -- leases -----------------------------------------------------------------------------------


async def test_expired_lease_is_delivered_again(make_transport: TransportFactory) -> None:
    transport = await make_transport(lease_seconds=0.3)
    await transport.publish([out("t1")])
    first = await receive_one(transport)
    assert await transport.locate("t1") == "leased"
    assert await transport.receive(["q"], 1, 0.05) == []
    started = time.monotonic()
    second = await receive_one(transport)
    assert time.monotonic() - started < 2.0  # woken by the expiry, not by the receive timeout
    assert (second.task_id, second.deliveries) == ("t1", 2)
    await transport.ack([first])  # the lost lease settles nothing
    assert await transport.locate("t1") == "leased"
    await transport.ack([second])
    assert await transport.locate("t1") is None


async def test_acks_made_together_each_settle_only_their_own_lease(
    make_transport: TransportFactory,
) -> None:
    # Engines may settle the acks of tasks finishing together in one call (Redis, SQLite): a
    # lost lease among them still settles nothing, across bands and queues.
    transport = await make_transport(lease_seconds=0.3)
    await transport.publish([out("t1")])
    stale = await receive_one(transport)
    current = await receive_one(transport)  # after the first lease ran out
    await transport.publish([out("t2", priority=5), out("t3", "r")])
    others = [await receive_one(transport), await receive_one(transport, "r")]
    await asyncio.gather(*(transport.ack([d]) for d in (stale, *others)))
    assert [await transport.locate(t) for t in ("t1", "t2", "t3")] == ["leased", None, None]
    await transport.ack([current])
    assert await transport.locate("t1") is None


async def test_extend_keeps_a_delivery_leased(make_transport: TransportFactory) -> None:
    transport = await make_transport(lease_seconds=0.5)
    await transport.publish([out("t1")])
    delivery = await receive_one(transport)
    for _ in range(3):
        await asyncio.sleep(0.25)
        await transport.extend([delivery])
    assert await transport.receive(["q"], 1, 0.0) == []
    assert await transport.locate("t1") == "leased"
    again = await receive_one(transport)
    assert again.deliveries == 2


async def test_release_with_delay_and_new_body(transport: MessageTransport) -> None:
    await transport.publish([out("t1", body=b"v1")])
    delivery = await receive_one(transport)
    await transport.release(delivery, body=b"v2", delay=0.3)
    assert await transport.locate("t1") == "delayed"
    assert await transport.receive(["q"], 1, 0.05) == []
    again = await receive_one(transport)
    assert (again.body, again.deliveries) == (b"v2", 2)
    assert await transport.locate("t1") == "leased"


async def test_release_without_delay_requeues_at_once(transport: MessageTransport) -> None:
    await transport.publish([out("t1")])
    delivery = await receive_one(transport)
    await transport.release(delivery)
    assert await transport.locate("t1") == "waiting"
    again = await receive_one(transport, timeout=1.0)
    assert (again.body, again.deliveries) == (b"t1", 2)


async def test_settling_a_lost_lease_does_nothing(make_transport: TransportFactory) -> None:
    transport = await make_transport(lease_seconds=0.2)
    await transport.publish([out("t1")])
    lost = await receive_one(transport)
    current = await receive_one(transport)
    await transport.release(lost, body=b"stale", delay=10)
    await transport.extend([lost])
    await transport.dead_letter(lost, "stale")
    assert await transport.dead_letters() == []
    assert await transport.locate("t1") == "leased"
    await transport.release(current)
    assert (await receive_one(transport)).body == b"t1"


# -- dead letters -----------------------------------------------------------------------------


async def test_dead_letter_keeps_the_message_and_its_reason(transport: MessageTransport) -> None:
    await transport.publish([out("t1", body=b"bad", priority=3)])
    delivery = await receive_one(transport)
    await transport.dead_letter(delivery, "cannot decode")
    assert await transport.locate("t1") is None
    [letter] = await transport.dead_letters()
    assert (letter.task_id, letter.queue, letter.body, letter.reason, letter.priority) == (
        "t1",
        "q",
        b"bad",
        "cannot decode",
        3,
    )
    assert letter.failed_at <= time.time()
    assert await transport.drop_dead([DeadLetter("unknown", "q", b"", "not read")]) == 0
    assert await transport.drop_dead([letter]) == 1
    assert await transport.dead_letters() == []
    await transport.publish([out("t1", body=b"bad")])  # a dropped letter's id may be sent again
    assert (await receive_one(transport)).deliveries == 1


async def test_dead_letters_oldest_first_and_dropped_one_by_one(
    transport: MessageTransport,
) -> None:
    await transport.publish([out(f"t{i}") for i in range(3)])
    for delivery in await transport.receive(["q"], 3, 1.0):
        await transport.dead_letter(delivery, f"reason {delivery.task_id}")
    letters = await transport.dead_letters()
    assert [d.task_id for d in letters] == ["t0", "t1", "t2"]
    assert [d.task_id for d in await transport.dead_letters(limit=2)] == ["t0", "t1"]
    assert await transport.drop_dead([letters[1]]) == 1
    assert [d.task_id for d in await transport.dead_letters()] == ["t0", "t2"]


async def test_a_letter_the_same_id_got_since_is_not_dropped(transport: MessageTransport) -> None:
    read: list[DeadLetter] = []
    for reason in ("first", "again"):  # dead-lettered, sent again, failed again before the drop
        await transport.publish([out("t1")])
        await transport.dead_letter(await receive_one(transport), reason)
        read = read or await transport.dead_letters()
    await transport.drop_dead(read)
    assert [d.reason for d in await transport.dead_letters()] == ["again"]


async def test_a_malformed_entry_comes_back_alone_with_its_problem(
    planted: tuple[Engine, Any],
) -> None:
    engine, plant = planted
    transport = engine.transport
    assert transport is not None
    await transport.publish([out("good1"), out("good2")])
    word = await plant("q")
    await transport.publish([out("good3")])
    got: list[Delivery] = []
    while len(got) < 4:
        batch = await transport.receive(["q"], 10, 5.0)
        assert batch, f"only {[d.task_id for d in got]} were delivered"
        got += batch
    bad = [d for d in got if d.problem is not None]
    assert len(bad) == 1, [(d.task_id, d.problem) for d in got]
    assert word in (bad[0].problem or "")
    assert sorted(d.task_id for d in got if d.problem is None) == ["good1", "good2", "good3"]
    await transport.dead_letter(bad[0], f"malformed entry: {bad[0].problem}")
    await transport.ack([d for d in got if d.problem is None])
    [letter] = await transport.dead_letters()
    assert letter.reason == f"malformed entry: {bad[0].problem}"
    assert await transport.receive(["q"], 10, 0.3) == []


# -- admin reads and operations ---------------------------------------------------------------


async def test_remove_a_waiting_or_delayed_message(transport: MessageTransport) -> None:
    await transport.publish([out("waiting"), out("delayed", eta=time.time() + 60)])
    assert await transport.remove("waiting") is True
    assert await transport.remove("delayed") is True
    assert await transport.locate("waiting") is None
    assert await transport.locate("delayed") is None
    assert await transport.receive(["q"], 10, 0.05) == []


async def test_a_leased_or_unknown_message_is_not_removed(transport: MessageTransport) -> None:
    await transport.publish([out("t1")])
    await receive_one(transport)
    assert await transport.remove("t1") is False
    assert await transport.locate("t1") == "leased"
    assert await transport.remove("unknown") is False


async def test_locations(transport: MessageTransport) -> None:
    await transport.publish([out("leased", priority=9), out("waiting")])
    await transport.publish([out("delayed", eta=time.time() + 60)])
    await transport.publish([out("released", "r")])
    await receive_one(transport)
    await transport.release(await receive_one(transport, "r"), delay=60)
    assert await transport.locate("leased") == "leased"
    assert await transport.locate("waiting") == "waiting"
    assert await transport.locate("delayed") == "delayed"
    assert await transport.locate("released") == "delayed"
    assert await transport.locate("unknown") is None


# -- inspection and operations ----------------------------------------------------------------


async def test_queue_stats(transport: MessageTransport) -> None:
    assert await transport.queue_stats() == []
    await transport.publish([out("run", "a", priority=9), out("r1", "a"), out("r2", "a")])
    await transport.publish([out("s1", "a", eta=time.time() + 60), out("b1", "b")])
    await receive_one(transport, "a")
    stats = {s.name: s for s in await transport.queue_stats()}
    assert stats == {
        "a": QueueStats("a", ready=2, scheduled=1, running=1),
        "b": QueueStats("b", ready=1, scheduled=0, running=0),
    }


async def test_purge_keeps_running_messages(transport: MessageTransport) -> None:
    await transport.publish([out("run", "a", priority=9), out("a1", "a"), out("a2", "a")])
    await transport.publish([out("a3", "a", eta=time.time() + 60), out("b1", "b"), out("b2", "b")])
    await receive_one(transport, "a")
    assert await transport.purge("a") == 3
    assert await transport.locate("run") == "leased"
    assert await transport.purge() == 2
    assert await transport.purge() == 0
    assert [s.name for s in await transport.queue_stats()] == ["a"]


# -- lifecycle --------------------------------------------------------------------------------


async def test_startup_is_idempotent(transport: MessageTransport) -> None:
    await transport.startup()
    await transport.publish([out("t1")])
    assert (await receive_one(transport)).task_id == "t1"
    assert transport.safe_url
    assert transport.lease_seconds > 0
