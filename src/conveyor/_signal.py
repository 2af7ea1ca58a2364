"""`Signal`: a wake-up bound to no event loop, for waiters in any loop or thread.

The engines made at import time (a module-level broker) are used by whichever loop runs later:
pytest makes one per test, `kiq_sync` runs its own. `asyncio.Event` binds to one loop; this
does not.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Signal", "wake"]


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


class Signal:
    """Wakes the coroutines waiting on it, whichever event loop or thread they run in.

    Unlike `asyncio.Event` it is bound to no loop, so an object made at import time serves every
    loop that later uses it (pytest makes one per test). A waiter passes the `generation` it saw
    before looking, so a notification in between is never missed.

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
