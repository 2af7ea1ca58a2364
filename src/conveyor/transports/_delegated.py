"""Shared state for engines that only move messages (RabbitMQ, ZeroMQ).

Such a server keeps no small atomic state, so `DelegatedState` forwards the contract's state
primitives (`set_nx`, `kv_*`, `incr`, `rate_acquire`, `set_add`) to a companion "state"
transport named by a URL: `redis://...`, `sqlite:///state.db` or `memory://`. Without one the
state lives in this process's memory and a WARNING says which features become per-process.

`IoThread` runs an engine's connection in one event loop of its own, so the transport serves
callers in any loop or thread (pytest's loop, `asyncio.run` elsewhere, the `kiq_sync` portal).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from conveyor._urls import safe_url, split_options
from conveyor.errors import ConfigurationError
from conveyor.transports.base import Transport

__all__ = [
    "PER_PROCESS_WARNING",
    "DelegatedState",
    "IoThread",
    "reset_after_fork",
    "state_transport",
]

log = logging.getLogger("conveyor.transports")

T = TypeVar("T")

#: Keys the user (the broker, the worker) stores live under this namespace of the state store.
USER_PREFIX = "kv:"

PER_PROCESS_WARNING = (
    "%s keeps no shared state: rate limits, unique_for, cancelling a task another process "
    "holds, task states, schedules' exactly-once and workflows are per-process; pass "
    "state_url (redis://... or sqlite:///state.db) to share them"
)


def state_transport(url: str | None) -> Transport:
    """The transport that keeps the shared state a `state_url` names (memory when None)."""
    if url is None or urlsplit(url).scheme == "memory":
        from conveyor.transports.memory import MemoryTransport

        return MemoryTransport()
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from conveyor.transports.sqlite import SqliteTransport

        path = urlsplit(url).path
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigurationError(f"state URL {url!r} names no file: use sqlite:///state.db")
        return SqliteTransport(path)
    if scheme.startswith("redis") or scheme == "unix":
        from conveyor.transports.redis import RedisTransport

        plain, query = split_options(url)
        return RedisTransport(plain, prefix=query.get("prefix") or "conveyor")
    raise ConfigurationError(
        f"unknown state URL scheme in {safe_url(url)!r}: use redis://, sqlite:/// or memory://"
    )


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


class DelegatedState(Transport):
    """The contract's state primitives, forwarded to a companion state transport.

    Subclasses set `_io`, call `init_state` in their constructor and `start_state` /
    `stop_state` in `startup` / `shutdown`; user keys are stored under `kv:`, so an engine's own
    keys in the same store never show up in `kv_scan`. A per-process (memory) store is only
    used from the `_io` thread, as the engine's own calls are.
    """

    state_store: Transport
    _io: IoThread  # the engine's connection thread, set by the subclass
    state_url: str | None = None
    state_shared: bool = False
    _warned: bool = False

    def init_state(self, state_url: str | None) -> None:
        """Pick the state store a `state_url` names."""
        self.state_store = state_transport(state_url)
        self.state_url = state_url
        self.state_shared = state_url is not None and urlsplit(state_url).scheme != "memory"

    async def start_state(self) -> None:
        """Start the state store; warn once when it is per-process."""
        await self.state_store.startup()
        if not self.state_shared and not self._warned:
            self._warned = True
            log.warning(PER_PROCESS_WARNING, type(self).__name__)

    async def stop_state(self) -> None:
        """Close the state store."""
        await self.state_store.shutdown()

    async def _on_store(self, call: Coroutine[Any, Any, T]) -> T:
        """Await a state-store call; a memory store has no lock, so only the I/O thread uses it."""
        if self.state_shared:
            return await call
        return await self._io.run(call)

    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent (or expired); True when this call stored it."""
        return await self._on_store(self.state_store.set_nx(USER_PREFIX + key, value, ttl))

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self._on_store(self.state_store.kv_set(USER_PREFIX + key, value, ttl))

    async def kv_get(self, key: str) -> bytes | None:
        """The value of a live key, or None."""
        return await self._on_store(self.state_store.kv_get(USER_PREFIX + key))

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        found = await self._on_store(self.state_store.kv_scan(USER_PREFIX + prefix))
        return {key[len(USER_PREFIX) :]: value for key, value in found.items()}

    async def kv_delete(self, key: str) -> None:
        """Delete a key if present."""
        await self._on_store(self.state_store.kv_delete(USER_PREFIX + key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add `amount` to an integer key and return the new value."""
        return await self._on_store(self.state_store.incr(USER_PREFIX + key, amount, ttl))

    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one grant of a global bucket; else the seconds to wait."""
        return await self._on_store(self.state_store.rate_acquire(USER_PREFIX + key, limit, period))

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Atomically add `member` to the set at `key`; return the set's size."""
        return await self._on_store(self.state_store.set_add(USER_PREFIX + key, member, ttl))
