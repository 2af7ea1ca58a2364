"""The in-process state store: keys, counters, sets and rate windows in this process's memory.

Every method does its work under one lock without awaiting, so each is atomic even when an
engine's I/O thread and the application's loop share the store (a RabbitMQ or ZeroMQ broker
without a `state_url`). Expired entries read as absent and are swept now and then.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from conveyor.engines.base import StateStore
from conveyor.engines.kit import check_window
from conveyor.errors import BrokerError

__all__ = ["MemoryStore"]

_SWEEP_EVERY = 60.0


class MemoryStore(StateStore):
    """`StateStore` in this process's memory: shared by nothing else."""

    shared = False

    def __init__(self) -> None:
        self.safe_url = "memory://"
        self._lock = threading.Lock()
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._sets: dict[str, tuple[set[str], float | None]] = {}
        self._windows: dict[str, tuple[float, deque[float]]] = {}
        self._last_sweep = time.monotonic()

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._values[key]
            return None
        return item[0]

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        self._values = {k: v for k, v in self._values.items() if v[1] is None or v[1] > now}
        self._sets = {k: v for k, v in self._sets.items() if v[1] is None or v[1] > now}
        self._windows = {k: w for k, w in self._windows.items() if w[1] and w[1][-1] + w[0] > now}

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        with self._lock:
            return self._live(key, time.monotonic())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order."""
        with self._lock:
            now = time.monotonic()
            return [self._live(key, now) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        with self._lock:
            now = time.monotonic()
            self._sweep(now)
            self._values[key] = (value, None if ttl is None else now + ttl)

    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        with self._lock:
            now = time.monotonic()
            if self._live(key, now) is not None:
                return False
            self._values[key] = (value, None if ttl is None else now + ttl)
            return True

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""
        with self._lock:
            live = self._live(key, time.monotonic()) is not None
            self._values.pop(key, None)
            return live

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key; `ttl` applies when this call creates it."""
        with self._lock:
            now = time.monotonic()
            current = self._live(key, now)
            try:
                value = amount + (0 if current is None else int(current))
            except ValueError:
                raise BrokerError(f"key {key!r} does not hold an integer") from None
            if current is None:
                expires_at = None if ttl is None else now + ttl
            else:
                expires_at = self._values[key][1]
            self._values[key] = (str(value).encode(), expires_at)
            return value

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        with self._lock:
            now = time.monotonic()
            found = {
                key: self._live(key, now) for key in list(self._values) if key.startswith(prefix)
            }
            return {key: value for key, value in found.items() if value is not None}

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; `ttl` renews its expiry."""
        with self._lock:
            now = time.monotonic()
            members, expires_at = self._sets.get(key) or (set(), None)
            if expires_at is not None and expires_at <= now:
                members, expires_at = set(), None
            members.add(member)
            self._sets[key] = (members, expires_at if ttl is None else now + ttl)
            return len(members)

    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period`; else the seconds to wait."""
        check_window(limit, period)
        with self._lock:
            now = time.monotonic()
            self._sweep(now)
            _, grants = self._windows.get(key) or (period, deque())
            while grants and grants[0] <= now - period:
                grants.popleft()
            self._windows[key] = (period, grants)
            if len(grants) < limit:
                grants.append(now)
                return 0.0
            return max(grants[0] + period - now, 1e-6)
