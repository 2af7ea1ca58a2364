"""The tasks of the worker-process tests.

Not imported from here: the `app` fixture copies this file into the test's `tmp_path` under a
unique module name; the test imports it to send tasks and read results, and the worker
subprocesses load it with `conveyor worker <module>:broker`. Both build the broker from
`CONVEYOR_BROKER_URL`, so they share one SQLite file.

Tasks leave their effects as lines in `marks/<name>.txt` next to the module, so a test can see
what ran where even in a process it killed, and wait on `marks/<key>.go` files the test creates.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from conveyor import Context, Depends, broker_from_url

VERSION = 1  # the --reload test rewrites this line

MARKS = Path(__file__).resolve().parent / "marks"
GATE_SECONDS = 30.0

broker = broker_from_url()


def mark(name: str, *fields: object) -> None:
    """Append one line to `marks/<name>.txt`; one small O_APPEND write never interleaves."""
    MARKS.mkdir(exist_ok=True)
    line = " ".join(str(field) for field in fields) + "\n"
    fd = os.open(MARKS / f"{name}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def marks(name: str) -> list[list[str]]:
    """The lines of `marks/<name>.txt`, split into fields."""
    path = MARKS / f"{name}.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def gate_open(key: str) -> bool:
    """True once the test has created `marks/<key>.go`."""
    return (MARKS / f"{key}.go").exists()


async def wait_gate(key: str) -> None:
    """Wait until the test opens the gate `key`."""
    deadline = time.monotonic() + GATE_SECONDS
    while not gate_open(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {key!r} never opened")
        await asyncio.sleep(0.02)


# -- throughput ------------------------------------------------------------------------------


@broker.task
async def add(x: int, y: int) -> int:
    await asyncio.sleep(0.001)
    return x + y


@broker.task
def mul(x: int, y: int) -> int:
    time.sleep(0.001)
    return x * y


@broker.task
async def whoami() -> int:
    return os.getpid()


@broker.task
async def version() -> list[int]:
    return [VERSION, os.getpid()]


# -- crashes and stops -----------------------------------------------------------------------


@broker.task
async def work(n: int, seconds: float) -> int:
    """Mark the start, sleep, mark the end: the effect the crash and stop tests check."""
    mark("started", n, os.getpid(), time.time())
    await asyncio.sleep(seconds)
    mark("done", n, os.getpid())
    return n


@broker.task
def work_sync(n: int, seconds: float) -> int:
    """`work` in the worker's thread pool."""
    mark("started", n, os.getpid(), time.time())
    time.sleep(seconds)
    mark("done", n, os.getpid())
    return n


@broker.task
async def block(n: int, seconds: float) -> int:
    """`work`, blocking the worker's event loop the whole time (a sync call in an async task)."""
    mark("started", n, os.getpid(), time.time())
    time.sleep(seconds)  # noqa: ASYNC251  # on purpose: the lease must outlive a blocked loop
    mark("done", n, os.getpid())
    return n


def first_run(n: int) -> bool:
    """Mark the start of task `n`; True if it never started before."""
    first = not any(fields[0] == str(n) for fields in marks("started"))
    mark("started", n, os.getpid(), time.time())
    return first


@broker.task
async def slow_first(n: int, seconds: float) -> int:
    """Sleep `seconds` on its first run only, so a handed-back run finishes on the next."""
    if first_run(n):
        await asyncio.sleep(seconds)
    mark("done", n, os.getpid())
    return n


@broker.task
def slow_first_sync(n: int, seconds: float) -> int:
    """`slow_first` blocked in one C call in a thread, where no exception can reach it."""
    if first_run(n):
        time.sleep(seconds)
    mark("done", n, os.getpid())
    return n


@broker.task(executor="process")
def slow_first_process(n: int, seconds: float) -> int:
    """`slow_first` in the worker's process pool."""
    if first_run(n):
        time.sleep(seconds)
    mark("done", n, os.getpid())
    return n


# -- task options ----------------------------------------------------------------------------


@broker.task(retries=3, retry_delay=0.2, retry_backoff=2.0)
async def flaky(fail_times: int, context: Context = Depends()) -> int:
    mark("flaky", context.message.task_id, context.attempt, time.time())
    if context.attempt <= fail_times:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return context.attempt


@broker.task
async def boom() -> None:
    raise ValueError("boom")


@broker.task(timeout=0.5)
async def too_slow() -> None:
    await asyncio.sleep(30)


@broker.task(timeout=0.5)
def too_slow_sync() -> None:
    for _ in range(600):
        time.sleep(0.05)


@broker.task(executor="process", timeout=0.5)
def too_slow_process() -> None:
    time.sleep(30)


@broker.task
async def stamp() -> float:
    return time.time()


@broker.task(queue="prio")
async def ordered(n: int) -> None:
    mark("order", n)


@broker.task
async def sleepy(key: str) -> None:
    mark("sleepy", key)
    await asyncio.sleep(30)


@broker.task
def sleepy_sync(key: str) -> None:
    mark("sleepy", key)
    for _ in range(600):
        time.sleep(0.05)


@broker.task
async def report(context: Context = Depends()) -> str:
    await context.set_progress({"done": 1, "total": 2})
    await wait_gate("report")
    await context.set_progress({"done": 2, "total": 2})
    return "reported"


@broker.task
async def squares(n: int) -> AsyncIterator[int]:
    """Yield the first item, wait for the test's gate, then yield the rest."""
    for i in range(n):
        yield i * i
        if i == 0:
            await wait_gate("squares")


@broker.task
def words(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"w{i}"


@broker.task(unique_for=30)
async def once(n: int) -> int:
    mark("once", n)
    return n


@broker.task(rate_limit="5/s")
async def limited(n: int) -> list[float]:
    """Return when it started and in which process, then hold its slot for a while."""
    started = time.time()
    await asyncio.sleep(0.3)
    return [started, os.getpid()]


@broker.task(queue="other")
async def on_other() -> str:
    return "other"


_HOARD: list[bytes] = []


@broker.task
async def hoard(megabytes: int) -> int:
    """Keep `megabytes` of memory for good, so the worker's RSS grows past --max-memory."""
    _HOARD.append(b"\x01" * (megabytes * 2**20))  # written, so it counts in RSS
    return os.getpid()
