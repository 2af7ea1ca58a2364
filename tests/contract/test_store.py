"""The `StateStore` contract, run against every engine that keeps state (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from conveyor.engines.base import StateStore
from conveyor.errors import BrokerError, ConfigurationError

pytestmark = pytest.mark.timeout(30)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_set_get_scan_delete(store: StateStore) -> None:
    await store.set("worker:1", b"a")
    await store.set("worker:2", b"b", 60)
    await store.set("workers", b"c")
    await store.set("worker:1", b"A")
    assert await store.get("worker:1") == b"A"
    assert await store.get("missing") is None
    assert await store.scan("worker:") == {"worker:1": b"A", "worker:2": b"b"}
    assert len(await store.scan("")) == 3
    assert await store.delete("worker:1") is True
    assert await store.delete("missing") is False
    assert await store.scan("worker:") == {"worker:2": b"b"}


async def test_get_many_in_order(store: StateStore) -> None:
    await store.set("cancel:a", b"1")
    await store.set("cancel:c", b"3", 60)
    assert await store.get_many(["cancel:a", "cancel:b", "cancel:c"]) == [b"1", None, b"3"]
    assert await store.get_many([]) == []


async def test_ttl_expires(store: StateStore) -> None:
    await store.set("k", b"v", 0.2)
    await store.set("long", b"v", 60)
    assert await store.get("k") == b"v"

    async def gone() -> bool:
        return await store.get("k") is None

    await eventually(gone)
    assert await store.scan("k") == {}
    assert await store.get_many(["k", "long"]) == [None, b"v"]
    assert await store.delete("k") is False


async def test_set_nx(store: StateStore) -> None:
    assert await store.set_nx("lock", b"1") is True
    assert await store.set_nx("lock", b"2") is False
    assert await store.get("lock") == b"1"
    assert await store.set_nx("short", b"1", 0.2) is True
    assert await store.set_nx("short", b"2", 0.2) is False

    async def free_again() -> bool:
        return await store.set_nx("short", b"3", 60)

    await eventually(free_again)
    assert await store.get("short") == b"3"


async def test_set_nx_is_atomic(store: StateStore) -> None:
    won = await asyncio.gather(*(store.set_nx("race", str(i).encode(), 60) for i in range(20)))
    assert won.count(True) == 1


async def test_incr(store: StateStore) -> None:
    assert await store.incr("n") == 1
    assert await store.incr("n", 5) == 6
    assert await store.incr("n", -2) == 4
    assert await store.get("n") == b"4"
    assert await store.incr("window", ttl=0.2) == 1
    assert await store.incr("window", ttl=0.2) == 2

    async def expired() -> bool:
        return await store.get("window") is None

    await eventually(expired)
    assert await store.incr("window", ttl=0.2) == 1


async def test_incr_of_a_non_integer_fails(store: StateStore) -> None:
    await store.set("text", b"abc")
    with pytest.raises(BrokerError, match="integer"):
        await store.incr("text")


async def test_set_add_counts_each_member_once(store: StateStore) -> None:
    assert await store.set_add("group", "0") == 1
    assert await store.set_add("group", "1") == 2
    assert await store.set_add("group", "0") == 2  # a redelivered member counts once
    assert await store.set_add("other", "0") == 1
    assert await store.set_add("group", "2") == 3
    assert await store.scan("group") == {}  # sets are not keys


async def test_set_add_is_atomic(store: StateStore) -> None:
    sizes = await asyncio.gather(*(store.set_add("members", str(i)) for i in range(20)))
    assert sorted(sizes) == list(range(1, 21))  # no two adds saw the same size
    assert await store.set_add("members", "7") == 20


async def test_set_add_ttl_expires_the_whole_set(store: StateStore) -> None:
    assert await store.set_add("brief", "a", ttl=0.3) == 1
    assert await store.set_add("brief", "b", ttl=0.3) == 2

    async def expired() -> bool:  # re-adding "a" without a ttl renews nothing
        return await store.set_add("brief", "a") == 1

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


async def test_window_acquire_never_exceeds_the_limit(store: StateStore) -> None:
    limit, period = 3, 0.2
    grants: list[tuple[float, float]] = []
    end = time.monotonic() + 0.7
    while time.monotonic() < end:
        before = time.monotonic()
        wait = await store.window_acquire("rl", limit, period)
        if wait == 0.0:
            grants.append((before, time.monotonic()))
        else:
            assert 0.0 < wait <= period
            await asyncio.sleep(wait)
    assert len(grants) >= 2 * limit
    assert_no_window_over_limit(grants, limit, period)


async def test_window_acquire_waits_for_the_oldest_grant(store: StateStore) -> None:
    assert await store.window_acquire("a", 2, 10.0) == 0.0
    assert await store.window_acquire("a", 2, 10.0) == 0.0
    assert 9.0 < await store.window_acquire("a", 2, 10.0) <= 10.0
    assert await store.window_acquire("b", 2, 10.0) == 0.0


async def test_window_acquire_rejects_an_empty_window(store: StateStore) -> None:
    with pytest.raises(ConfigurationError):
        await store.window_acquire("a", 0, 1.0)


async def test_startup_is_idempotent(store: StateStore) -> None:
    await store.startup()
    await store.set("k", b"v")
    assert await store.get("k") == b"v"
    assert store.safe_url
