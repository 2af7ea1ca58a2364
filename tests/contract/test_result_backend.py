"""The `ResultBackend` contract, run against every engine (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from conveyor.engines.base import ResultBackend
from conveyor.engines.memory import MemoryResultBackend
from conveyor.errors import ConfigurationError

pytestmark = pytest.mark.timeout(30)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_set_and_get(result_backend: ResultBackend) -> None:
    assert await result_backend.get_result("t1") is None
    await result_backend.set_result("t1", b"first", None)
    assert await result_backend.get_result("t1") == b"first"
    await result_backend.set_result("t1", b"second", 60)
    assert await result_backend.get_result("t1") == b"second"
    assert await result_backend.get_result("t2") is None


async def test_wait_returns_a_stored_result_at_once(result_backend: ResultBackend) -> None:
    await result_backend.set_result("t1", b"done", None)
    assert await result_backend.wait_result("t1", 0.0) == b"done"
    assert await result_backend.wait_result("t1", None) == b"done"


async def test_wait_returns_when_another_coroutine_stores(result_backend: ResultBackend) -> None:
    waiters = [asyncio.create_task(result_backend.wait_result("t1", 10.0)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    started = time.monotonic()
    await result_backend.set_result("t1", b"done", None)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5.0) == [b"done"] * 3
    assert time.monotonic() - started < 1.0


async def test_wait_without_timeout_returns_when_stored(result_backend: ResultBackend) -> None:
    waiter = asyncio.create_task(result_backend.wait_result("t1", None))
    await asyncio.sleep(0.02)
    await result_backend.set_result("t1", b"done", None)
    assert await asyncio.wait_for(waiter, 5.0) == b"done"


async def test_a_result_stored_from_another_thread_wakes_a_wait(
    result_backend: ResultBackend,
) -> None:
    waiter = asyncio.create_task(result_backend.wait_result("t1", 10.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.to_thread(asyncio.run, result_backend.set_result("t1", b"done", None))
    assert await asyncio.wait_for(waiter, 5.0) == b"done"
    assert time.monotonic() - started < 1.0


async def test_wait_times_out_with_none(result_backend: ResultBackend) -> None:
    started = time.monotonic()
    assert await result_backend.wait_result("t1", 0.2) is None
    assert 0.15 <= time.monotonic() - started < 2.0


async def test_result_ttl_expires(result_backend: ResultBackend) -> None:
    await result_backend.set_result("short", b"x", 0.2)
    await result_backend.set_result("kept", b"y", None)
    assert await result_backend.get_result("short") == b"x"

    async def gone() -> bool:
        return await result_backend.get_result("short") is None

    await eventually(gone)
    assert await result_backend.get_result("kept") == b"y"


async def test_progress(result_backend: ResultBackend) -> None:
    assert await result_backend.get_progress("t1") is None
    await result_backend.set_progress("t1", b'{"done": 1}', None)
    await result_backend.set_progress("t1", b'{"done": 2}', None)
    assert await result_backend.get_progress("t1") == b'{"done": 2}'
    await result_backend.set_progress("t2", b"x", 0.2)

    async def gone() -> bool:
        return await result_backend.get_progress("t2") is None

    await eventually(gone)


async def test_stream_push_read_close(result_backend: ResultBackend) -> None:
    assert await result_backend.read_stream("t1", 0) == (0, [], False)
    await result_backend.push_stream("t1", [b"a", b"b"], 60)
    assert await result_backend.read_stream("t1", 0) == (2, [b"a", b"b"], False)
    await result_backend.push_stream("t1", [b"c"], 60)
    assert await result_backend.read_stream("t1", 2) == (3, [b"c"], False)
    assert await result_backend.read_stream("t1", 3) == (3, [], False)
    await result_backend.close_stream("t1", 60)
    assert await result_backend.read_stream("t1", 3) == (3, [], True)
    assert await result_backend.read_stream("t1", 1) == (3, [b"b", b"c"], True)


async def test_reset_stream_starts_it_afresh(result_backend: ResultBackend) -> None:
    await result_backend.push_stream("t1", [b"a", b"b"], 60)
    await result_backend.reset_stream("t1")
    assert await result_backend.read_stream("t1", 0) == (0, [], False)
    await result_backend.push_stream("t1", [b"c"], 60)
    await result_backend.close_stream("t1", 60)
    assert await result_backend.read_stream("t1", 0) == (1, [b"c"], True)


async def test_reset_of_a_stream_that_never_started(result_backend: ResultBackend) -> None:
    await result_backend.reset_stream("t9")
    assert await result_backend.read_stream("t9", 0) == (0, [], False)
    await result_backend.push_stream("t9", [b"x"], 60)
    assert await result_backend.read_stream("t9", 0) == (1, [b"x"], False)


async def test_closing_an_empty_stream(result_backend: ResultBackend) -> None:
    await result_backend.close_stream("t1", None)
    assert await result_backend.read_stream("t1", 0) == (0, [], True)


async def test_stream_ttl_expires(result_backend: ResultBackend) -> None:
    await result_backend.push_stream("t1", [b"a"], 0.2)

    async def gone() -> bool:
        return await result_backend.read_stream("t1", 0) == (0, [], False)

    await eventually(gone)
    await result_backend.push_stream("t1", [b"new"], 60)
    assert await result_backend.read_stream("t1", 0) == (1, [b"new"], False)


async def test_delete_forgets_everything(result_backend: ResultBackend) -> None:
    await result_backend.set_result("t1", b"r", None)
    await result_backend.set_progress("t1", b"p", None)
    await result_backend.push_stream("t1", [b"a"], None)
    await result_backend.set_result("t2", b"other", None)
    await result_backend.delete("t1")
    await result_backend.delete("unknown")
    assert await result_backend.get_result("t1") is None
    assert await result_backend.get_progress("t1") is None
    assert await result_backend.read_stream("t1", 0) == (0, [], False)
    assert await result_backend.get_result("t2") == b"other"


async def test_startup_is_idempotent(result_backend: ResultBackend) -> None:
    await result_backend.startup()
    await result_backend.set_result("t1", b"r", None)
    assert await result_backend.get_result("t1") == b"r"


# -- the memory store's own promises ----------------------------------------------------------


async def test_memory_keeps_the_most_recently_used_results() -> None:
    backend = MemoryResultBackend(max_stored_results=2)
    await backend.set_result("a", b"1", None)
    await backend.set_progress("a", b"p", None)
    await backend.set_result("b", b"2", None)
    await backend.get_result("a")
    await backend.set_result("c", b"3", None)
    assert await backend.get_result("b") is None
    assert await backend.get_result("a") == b"1"
    assert await backend.get_result("c") == b"3"
    await backend.set_result("d", b"4", None)
    assert await backend.get_result("a") is None
    assert await backend.get_progress("a") is None


async def test_memory_without_a_cap_keeps_every_result() -> None:
    backend = MemoryResultBackend(max_stored_results=-1)
    for i in range(2000):
        await backend.set_result(str(i), b"x", None)
    assert await backend.get_result("0") == b"x"


def test_memory_rejects_a_zero_cap() -> None:
    with pytest.raises(ConfigurationError):
        MemoryResultBackend(max_stored_results=0)
