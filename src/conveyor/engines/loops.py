"""How engines bind connections to event loops and threads, written once for all of them.

A broker made at import time is used by whichever event loop runs later: pytest makes one per
test, `kiq_sync` runs a portal loop of its own, a forked worker starts a new one. An asyncio
connection belongs to the loop that opened it, so:

* `PerLoop` keeps one connection object per loop (Redis, NATS), closed when its loop ends;
* `IoThread` runs one loop in a thread of its own that owns an engine's connection, for engines
  whose connection must be one object (RabbitMQ's consumers, ZeroMQ's sockets);
* `Signal` wakes waiters in any loop or thread (an `asyncio.Event` binds to one loop);
* `Batcher` turns the calls of many coroutines of one loop into one call per batch;
* `together` awaits calls concurrently, and one alone in place (a single `kiq`);
* `reset_after_fork` drops, in a forked child, what the parent's connection left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

__all__ = [
    "Batcher",
    "IoThread",
    "PerLoop",
    "Signal",
    "batcher_here",
    "reset_after_fork",
    "together",
    "wake",
]

T = TypeVar("T")
C = TypeVar("C")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def wake(future: asyncio.Future[None]) -> None:
    """Resolve `future` from any thread; its loop may differ from the caller's."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if future.get_loop() is running:
        _resolve(future)
    else:
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody to wake
            future.get_loop().call_soon_threadsafe(_resolve, future)


async def together(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await `calls` concurrently; one alone is awaited in place, without the task and the
    extra loop turn `asyncio.gather` makes for it (a single `kiq` or ack stays one round trip,
    with no task switch before the caller goes on)."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


class Signal:
    """Wakes the coroutines waiting on it, whichever event loop or thread they run in.

    A waiter passes the `generation` it saw before looking, so a notification in between is
    never missed.

    Attributes:
        generation: how many times `notify` was called.
        users: free for the owner to count the coroutines that share this signal.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.users = 0
        self._waiting: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Wake every waiter."""
        self.generation += 1
        waiting, self._waiting = self._waiting, set()
        for future in waiting:
            wake(future)

    async def wait(self, seen: int, seconds: float | None) -> None:
        """Sleep until a notification after generation `seen`, or until `seconds` pass."""
        if self.generation != seen:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.add(future)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await future
        finally:
            self._waiting.discard(future)


class Batcher(Generic[T]):
    """Runs `flush(items)` for items submitted by many coroutines, one call per batch: what
    arrives while a batch is flushed goes in the next one, so many settles share one statement
    and one commit, and a lone item goes at once. Each `submit` returns once its batch is done,
    or raises what the flush raised.

    Bound to the event loop that made it (`loop`); `submit` from another loop flushes its item
    alone. An item left when its loop ends is cancelled.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[object]]) -> None:
        self.loop = asyncio.get_running_loop()
        self._flush = flush
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Flush `item` in the next batch; return once that batch is done."""
        if asyncio.get_running_loop() is not self.loop:
            await self._flush([item])
            return
        done = self.loop.create_future()
        self._pending.append((item, done))
        if self._draining is None or self._draining.done():
            self._draining = self.loop.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._flush([item for item, _ in batch])
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
        finally:
            pending, self._pending = self._pending, []
            for _, done in pending:  # cancelled with its loop: nobody waits any more
                done.cancel()


def batcher_here(
    batcher: Batcher[T] | None, flush: Callable[[list[T]], Awaitable[object]]
) -> Batcher[T]:
    """`batcher` when it belongs to the running loop, else a new one flushing with `flush`: a
    transport keeps one and batches the settles of whichever loop calls it."""
    if batcher is None or batcher.loop is not asyncio.get_running_loop():
        return Batcher(flush)
    return batcher


def _settle(batch: list[tuple[Any, asyncio.Future[None]]], exc: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)


class PerLoop(Generic[C]):
    """One connection object per event loop: made by `make(loop)` on its first use in that loop,
    closed by `close(obj)` when the loop ends (or by `close_all`). A forked child starts with
    none: the parent's belong to loops that do not run there.
    """

    def __init__(
        self,
        make: Callable[[asyncio.AbstractEventLoop], C],
        close: Callable[[C], Awaitable[None]],
    ) -> None:
        self._make, self._close = make, close
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[C, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop, C] | None = None  # a dict lookup less
        reset_after_fork(self._after_fork)

    def _after_fork(self) -> list[Any]:
        """In a forked child: forget the parent's objects (kept, never used or closed)."""
        dropped = list(self._made.values())
        self._made, self._last = weakref.WeakKeyDictionary(), None
        return dropped

    def here(self) -> C:
        """The running loop's object, made on first use."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        made = self._made.get(loop)
        if made is None:
            obj = self._make(loop)
            # An async generator parked at its `yield`: when the loop ends (`asyncio.run`, a
            # test's loop) it closes the generator, whose `finally` closes `obj` in time.
            closer = self._close_with_loop(loop, obj)
            parking = loop.create_task(_first_step(closer))
            made = self._made[loop] = (obj, (closer, parking))
        self._last = (loop, made[0])
        return made[0]

    def each(self) -> list[C]:
        """Every live object, in no particular order."""
        return [obj for obj, _ in list(self._made.values())]

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, obj: C
    ) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self._close(obj)
            self._forget(loop, obj)

    def _forget(self, loop: asyncio.AbstractEventLoop, obj: C) -> None:
        made = self._made.get(loop)
        if made is not None and made[0] is obj:
            del self._made[loop]
        if self._last is not None and self._last[1] is obj:
            self._last = None

    async def close_all(self, timeout: float = 5.0) -> None:
        """Close this loop's object, and ask the other running loops to close theirs."""
        here = asyncio.get_running_loop()
        for loop, (obj, _) in list(self._made.items()):
            if loop is here:
                await self._close(obj)
            elif loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(_call(self._close, obj), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(closing), timeout)
            self._forget(loop, obj)


async def _call(close: Callable[[C], Awaitable[None]], obj: C) -> None:
    await close(obj)


async def _first_step(gen: AsyncIterator[None]) -> None:
    await anext(gen)


#: What forked children inherited from their parent's connections: kept, never used or closed
#: (closing would act on the parent's sockets, and a collected one may log or block).
_INHERITED: list[Any] = []


def reset_after_fork(forget: Callable[[], list[Any]]) -> None:
    """Call the bound method `forget` in every forked child, to drop the parent's connection.

    `forget` resets its object's connection state and returns what it dropped, which is kept
    alive, untouched, for the child's lifetime. The object is held weakly.
    """
    method = weakref.WeakMethod(forget)

    def in_child() -> None:
        bound = method()
        if bound is not None:
            _INHERITED.extend(bound())

    os.register_at_fork(after_in_child=in_child)


class IoThread:
    """A daemon thread running one event loop that owns an engine's connection."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The thread's loop, started on first use."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._loop, self._thread, self._pid = None, None, os.getpid()
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name=self._name, daemon=True
                )
                self._thread.start()
            return self._loop

    def inside(self) -> bool:
        """True when called from the thread's own loop."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the thread's loop and await it from the caller's loop."""
        if self.inside():
            return await coro
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Stop the loop and join the thread (a later `run` starts a new one)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
