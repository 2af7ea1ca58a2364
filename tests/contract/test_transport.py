"""The `Transport` contract, run against every engine (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from conveyor.errors import BrokerError, ConfigurationError
from conveyor.transports.base import Delivery, Outgoing, QueueStats, Transport

pytestmark = pytest.mark.timeout(30)

#: The `make_transport` fixture: `await make_transport(lease_seconds=...)` -> a started transport.
TransportFactory = Callable[..., Awaitable[Transport]]


def out(
    task_id: str,
    queue: str = "q",
    *,
    body: bytes | None = None,
    priority: int = 0,
    eta: float | None = None,
) -> Outgoing:
    return Outgoing(task_id, queue, body or task_id.encode(), priority, eta)


async def receive_one(transport: Transport, queue: str = "q", timeout: float = 5.0) -> Delivery:
    got = await transport.receive([queue], 1, timeout)
    assert len(got) == 1, f"nothing delivered from {queue!r} within {timeout}s"
    return got[0]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- publish, receive, ack --------------------------------------------------------------------


async def test_publish_receive_ack(transport: Transport) -> None:
    await transport.publish([out("t1", body=b"payload")])
    delivery = await receive_one(transport)
    assert (delivery.task_id, delivery.queue, delivery.body) == ("t1", "q", b"payload")
    assert delivery.deliveries == 1
    await transport.ack([delivery])
    assert await transport.state("t1") is None
    assert await transport.receive(["q"], 1, 0.05) == []


async def test_receive_returns_at_most_max_count(transport: Transport) -> None:
    await transport.publish([out(f"t{i}") for i in range(5)])
    first = await transport.receive(["q"], 3, 1.0)
    second = await transport.receive(["q"], 10, 1.0)
    assert len(first) == 3
    assert len(second) == 2
    assert {d.task_id for d in first + second} == {f"t{i}" for i in range(5)}


async def test_receive_waits_for_timeout_when_empty(transport: Transport) -> None:
    started = time.monotonic()
    assert await transport.receive(["q"], 1, 0.2) == []
    assert 0.15 <= time.monotonic() - started < 2.0


async def test_receive_wakes_when_a_message_is_published(transport: Transport) -> None:
    waiting = asyncio.create_task(transport.receive(["q"], 1, 10.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    await transport.publish([out("t1")])
    got = await asyncio.wait_for(waiting, 5.0)
    assert [d.task_id for d in got] == ["t1"]
    assert time.monotonic() - started < 1.0


async def test_receive_reads_only_the_queues_asked_for(transport: Transport) -> None:
    await transport.publish(
        [out("a1", "a", priority=1), out("b1", "b", priority=5), out("c1", "c")]
    )
    got = await transport.receive(["a", "b"], 10, 1.0)
    assert [(d.task_id, d.queue) for d in got] == [("b1", "b"), ("a1", "a")]
    assert await transport.state("c1") == "queued"


async def test_no_queues_means_every_queue(transport: Transport) -> None:
    await transport.publish([out("a1", "a"), out("b1", "b", priority=2)])
    got = await transport.receive([], 10, 1.0)
    assert [d.task_id for d in got] == ["b1", "a1"]


async def test_higher_priority_first_then_older(transport: Transport) -> None:
    for message in [out("low"), out("mid1", priority=5), out("high", priority=9)]:
        await transport.publish([message])
    await transport.publish([out("mid2", priority=5), out("mid3", priority=5)])
    got = await transport.receive(["q"], 10, 1.0)
    assert [d.task_id for d in got] == ["high", "mid1", "mid2", "mid3", "low"]


async def test_eta_is_not_delivered_early(transport: Transport) -> None:
    eta = time.time() + 0.4
    await transport.publish([out("later", eta=eta), out("now")])
    assert [d.task_id for d in await transport.receive(["q"], 10, 0.1)] == ["now"]
    assert await transport.state("later") == "scheduled"
    delivery = await receive_one(transport)
    assert delivery.task_id == "later"
    assert time.time() >= eta


async def test_publishing_a_held_task_id_again_is_ignored(transport: Transport) -> None:
    await transport.publish([out("t1", body=b"first")])
    await transport.publish([out("t1", body=b"second")])
    got = await transport.receive(["q"], 10, 1.0)
    assert [(d.task_id, d.body) for d in got] == [("t1", b"first")]


async def test_a_publish_from_another_thread_wakes_a_receive(transport: Transport) -> None:
    waiting = asyncio.create_task(transport.receive(["q"], 1, 10.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.to_thread(asyncio.run, transport.publish([out("t1")]))
    assert [d.task_id for d in await asyncio.wait_for(waiting, 5.0)] == ["t1"]
    assert time.monotonic() - started < 1.0


async def test_usable_from_one_event_loop_after_another(transport: Transport) -> None:
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
    assert await transport.state("t1") == "running"
    assert await transport.receive(["q"], 1, 0.05) == []
    started = time.monotonic()
    second = await receive_one(transport)
    assert time.monotonic() - started < 2.0  # woken by the expiry, not by the receive timeout
    assert (second.task_id, second.deliveries) == ("t1", 2)
    await transport.ack([first])  # the lost lease settles nothing
    assert await transport.state("t1") == "running"
    await transport.ack([second])
    assert await transport.state("t1") is None


async def test_extend_keeps_a_delivery_leased(make_transport: TransportFactory) -> None:
    transport = await make_transport(lease_seconds=0.5)
    await transport.publish([out("t1")])
    delivery = await receive_one(transport)
    for _ in range(3):
        await asyncio.sleep(0.25)
        await transport.extend([delivery])
    assert await transport.receive(["q"], 1, 0.0) == []
    assert await transport.state("t1") == "running"
    again = await receive_one(transport)
    assert again.deliveries == 2


async def test_release_with_delay_and_new_body(transport: Transport) -> None:
    await transport.publish([out("t1", body=b"v1")])
    delivery = await receive_one(transport)
    await transport.release(delivery, body=b"v2", delay=0.3, retrying=True)
    assert await transport.state("t1") == "retrying"
    assert await transport.receive(["q"], 1, 0.05) == []
    again = await receive_one(transport)
    assert (again.body, again.deliveries) == (b"v2", 2)
    assert await transport.state("t1") == "running"


async def test_release_without_delay_requeues_at_once(transport: Transport) -> None:
    await transport.publish([out("t1")])
    delivery = await receive_one(transport)
    await transport.release(delivery)
    assert await transport.state("t1") == "queued"
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
    assert await transport.state("t1") == "running"
    await transport.release(current)
    assert (await receive_one(transport)).body == b"t1"


# -- dead letters -----------------------------------------------------------------------------


async def test_dead_letter_and_requeue(transport: Transport) -> None:
    await transport.publish([out("t1", body=b"bad", priority=3)])
    delivery = await receive_one(transport)
    await transport.dead_letter(delivery, "cannot decode")
    assert await transport.state("t1") is None
    [letter] = await transport.dead_letters()
    assert (letter.task_id, letter.queue, letter.body, letter.reason) == (
        "t1",
        "q",
        b"bad",
        "cannot decode",
    )
    assert letter.failed_at <= time.time()
    assert await transport.requeue_dead(["unknown"]) == 0
    assert await transport.requeue_dead() == 1
    assert await transport.dead_letters() == []
    again = await receive_one(transport)
    assert (again.task_id, again.body, again.deliveries) == ("t1", b"bad", 1)


async def test_dead_letters_oldest_first_and_requeue_by_id(transport: Transport) -> None:
    await transport.publish([out(f"t{i}") for i in range(3)])
    for delivery in await transport.receive(["q"], 3, 1.0):
        await transport.dead_letter(delivery, f"reason {delivery.task_id}")
    assert [d.task_id for d in await transport.dead_letters()] == ["t0", "t1", "t2"]
    assert [d.task_id for d in await transport.dead_letters(limit=2)] == ["t0", "t1"]
    assert await transport.requeue_dead(["t1"]) == 1
    assert [d.task_id for d in await transport.dead_letters()] == ["t0", "t2"]
    assert [d.task_id for d in await transport.receive(["q"], 10, 1.0)] == ["t1"]


# -- cancellation and state -------------------------------------------------------------------


async def test_cancel_a_waiting_message(transport: Transport) -> None:
    await transport.publish([out("queued"), out("scheduled", eta=time.time() + 60)])
    assert await transport.cancel("queued") is True
    assert await transport.cancel("scheduled") is True
    assert await transport.state("queued") is None
    assert await transport.state("scheduled") is None
    assert await transport.receive(["q"], 10, 0.05) == []


async def test_cancel_a_running_message_is_remembered(transport: Transport) -> None:
    await transport.publish([out("t1"), out("t2")])
    await transport.receive(["q"], 2, 1.0)
    assert await transport.cancel("t1") is False
    assert await transport.state("t1") == "running"
    assert await transport.cancel_requested(["t1", "t2", "unknown"]) == {"t1"}
    assert await transport.cancel_requested([]) == set()


async def test_cancel_an_unknown_message(transport: Transport) -> None:
    assert await transport.cancel("unknown") is False


async def test_states(transport: Transport) -> None:
    if not transport.tracks_state:
        pytest.skip("this engine does not track where a message is")
    await transport.publish([out("running", priority=9), out("queued")])
    await transport.publish([out("scheduled", eta=time.time() + 60)])
    await transport.publish([out("retrying", "r")])
    await receive_one(transport)
    await transport.release(await receive_one(transport, "r"), delay=60, retrying=True)
    assert await transport.state("running") == "running"
    assert await transport.state("queued") == "queued"
    assert await transport.state("scheduled") == "scheduled"
    assert await transport.state("retrying") == "retrying"
    assert await transport.state("unknown") is None


# -- inspection and operations ----------------------------------------------------------------


async def test_queue_stats(transport: Transport) -> None:
    assert await transport.queue_stats() == []
    await transport.publish([out("run", "a", priority=9), out("r1", "a"), out("r2", "a")])
    await transport.publish([out("s1", "a", eta=time.time() + 60), out("b1", "b")])
    await receive_one(transport, "a")
    stats = {s.name: s for s in await transport.queue_stats()}
    assert stats == {
        "a": QueueStats("a", ready=2, scheduled=1, running=1),
        "b": QueueStats("b", ready=1, scheduled=0, running=0),
    }


async def test_purge_keeps_running_messages(transport: Transport) -> None:
    await transport.publish([out("run", "a", priority=9), out("a1", "a"), out("a2", "a")])
    await transport.publish([out("a3", "a", eta=time.time() + 60), out("b1", "b"), out("b2", "b")])
    await receive_one(transport, "a")
    assert await transport.purge("a") == 3
    assert await transport.state("run") == "running"
    assert await transport.purge() == 2
    assert await transport.purge() == 0
    assert [s.name for s in await transport.queue_stats()] == ["a"]


# -- small atomic state -----------------------------------------------------------------------


async def test_kv_set_get_scan_delete(transport: Transport) -> None:
    await transport.kv_set("worker:1", b"a", None)
    await transport.kv_set("worker:2", b"b", 60)
    await transport.kv_set("workers", b"c", None)
    await transport.kv_set("worker:1", b"A", None)
    assert await transport.kv_get("worker:1") == b"A"
    assert await transport.kv_get("missing") is None
    assert await transport.kv_scan("worker:") == {"worker:1": b"A", "worker:2": b"b"}
    assert len(await transport.kv_scan("")) == 3
    await transport.kv_delete("worker:1")
    await transport.kv_delete("missing")
    assert await transport.kv_scan("worker:") == {"worker:2": b"b"}


async def test_kv_ttl_expires(transport: Transport) -> None:
    await transport.kv_set("k", b"v", 0.2)
    assert await transport.kv_get("k") == b"v"

    async def gone() -> bool:
        return await transport.kv_get("k") is None

    await eventually(gone)
    assert await transport.kv_scan("k") == {}


async def test_set_nx(transport: Transport) -> None:
    assert await transport.set_nx("lock", b"1", None) is True
    assert await transport.set_nx("lock", b"2", None) is False
    assert await transport.kv_get("lock") == b"1"
    assert await transport.set_nx("short", b"1", 0.2) is True
    assert await transport.set_nx("short", b"2", 0.2) is False

    async def free_again() -> bool:
        return await transport.set_nx("short", b"3", 60)

    await eventually(free_again)
    assert await transport.kv_get("short") == b"3"


async def test_incr(transport: Transport) -> None:
    assert await transport.incr("n") == 1
    assert await transport.incr("n", 5) == 6
    assert await transport.incr("n", -2) == 4
    assert await transport.kv_get("n") == b"4"
    assert await transport.incr("window", ttl=0.2) == 1
    assert await transport.incr("window", ttl=0.2) == 2

    async def expired() -> bool:
        return await transport.kv_get("window") is None

    await eventually(expired)
    assert await transport.incr("window", ttl=0.2) == 1


async def test_incr_of_a_non_integer_fails(transport: Transport) -> None:
    await transport.kv_set("text", b"abc", None)
    with pytest.raises(BrokerError, match="integer"):
        await transport.incr("text")


async def test_set_add_counts_each_member_once(transport: Transport) -> None:
    assert await transport.set_add("group", "0") == 1
    assert await transport.set_add("group", "1") == 2
    assert await transport.set_add("group", "0") == 2  # a redelivered member counts once
    assert await transport.set_add("other", "0") == 1
    assert await transport.set_add("group", "2") == 3
    assert await transport.kv_scan("group") == {}  # sets are not kv keys


async def test_set_add_is_atomic(transport: Transport) -> None:
    sizes = await asyncio.gather(*(transport.set_add("members", str(i)) for i in range(20)))
    assert sorted(sizes) == list(range(1, 21))  # no two adds saw the same size
    assert await transport.set_add("members", "7") == 20


async def test_set_add_ttl_expires_the_whole_set(transport: Transport) -> None:
    assert await transport.set_add("brief", "a", ttl=0.3) == 1
    assert await transport.set_add("brief", "b", ttl=0.3) == 2

    async def expired() -> bool:  # re-adding "a" without a ttl renews nothing
        return await transport.set_add("brief", "a") == 1

    await eventually(expired)


def assert_no_window_over_limit(
    grants: list[tuple[float, float]], limit: int, period: float
) -> None:
    """Fail only on a certain breach: `limit + 1` grants whose calls all fit in one period."""
    grants = sorted(grants)
    for i in range(len(grants) - limit):
        group = grants[i : i + limit + 1]
        span = max(after for _, after in group) - min(before for before, _ in group)
        assert span >= period, f"{limit + 1} grants within {span:.3f}s < {period}s"


async def test_rate_acquire_never_exceeds_the_limit(transport: Transport) -> None:
    limit, period = 3, 0.2
    grants: list[tuple[float, float]] = []
    end = time.monotonic() + 0.7
    while time.monotonic() < end:
        before = time.monotonic()
        wait = await transport.rate_acquire("rl", limit, period)
        if wait == 0.0:
            grants.append((before, time.monotonic()))
        else:
            assert 0.0 < wait <= period
            await asyncio.sleep(wait)
    assert len(grants) >= 2 * limit
    assert_no_window_over_limit(grants, limit, period)


async def test_rate_acquire_waits_for_the_oldest_grant(transport: Transport) -> None:
    assert await transport.rate_acquire("a", 2, 10.0) == 0.0
    assert await transport.rate_acquire("a", 2, 10.0) == 0.0
    assert 9.0 < await transport.rate_acquire("a", 2, 10.0) <= 10.0
    assert await transport.rate_acquire("b", 2, 10.0) == 0.0


async def test_rate_acquire_rejects_an_empty_bucket(transport: Transport) -> None:
    with pytest.raises(ConfigurationError):
        await transport.rate_acquire("a", 0, 1.0)


# -- lifecycle --------------------------------------------------------------------------------


async def test_startup_is_idempotent(transport: Transport) -> None:
    await transport.startup()
    await transport.publish([out("t1")])
    assert (await receive_one(transport)).task_id == "t1"
    assert transport.safe_url
    assert transport.lease_seconds > 0
