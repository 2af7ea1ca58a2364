"""Lease renewal from a thread of its own, so a running task's lease outlives a busy event loop.

A worker renews the leases of its running messages every third of a lease. Done on the worker's
own event loop, a task that blocks that loop (a long synchronous call inside an `async def`)
would stop the renewals, and its message would be handed to another worker while this one still
runs it. `LeaseKeeper` renews from an event loop in a thread of its own instead, so a task runs
twice only when its whole process stops: killed, paused (SIGSTOP), or held by C code that keeps
the GIL for longer than a lease.

Invariants: the keeper only extends what the worker lists as running, never settles; the
transport must be `thread_safe` (the in-process queue is not: its worker renews on its loop);
the thread's event loop and the connections the transport opened in it are closed by `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from conveyor.engines.base import Delivery, MessageTransport
from conveyor.worker.outage import Outage

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """Extends the leases `running()` lists every `every` seconds, from a thread of its own.

    Args:
        transport: the worker's transport (`thread_safe`).
        running: the deliveries the worker runs now; called from the keeper's thread.
        every: seconds between two renewals.
    """

    def __init__(
        self, transport: MessageTransport, running: Callable[[], list[Delivery]], every: float
    ) -> None:
        self.transport, self.running, self.every = transport, running, every
        self._thread = threading.Thread(target=self._main, name="conveyor-leases", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        """Start renewing; returns once the thread's loop runs."""
        self._thread.start()
        self._started.wait(5.0)

    def stop(self) -> None:
        """Stop renewing, close the thread's loop and connections, and join the thread."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(wake.set)
        self._thread.join(10.0)

    def _main(self) -> None:
        asyncio.run(self._renew())  # closes the connections the transport opened on this loop

    async def _renew(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        extending = Outage("extend leases")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every)
            if self._wake.is_set():
                return
            deliveries = self.running()
            if not deliveries:
                continue
            try:
                await self.transport.extend(deliveries)
            except Exception as exc:  # a broker blip: the next renewal tries again (slack)
                extending.failed(exc)
            else:
                extending.worked()
