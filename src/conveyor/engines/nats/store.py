"""The engine's `StateStore` on the app's `P_kv` stream, with the compare-and-set loops of `keys`.

A key is one subject token per `:`-separated segment (`cancel:<id>` is `P.kv.cancel.<id>`):
`scan("worker:")` and `get_many` of many `cancel:` keys list only the subjects under their
common leading segments (one request), then read just the keys present. A set is `P.set.<key>`
(a JSON list of its members), apart from the keys `scan` sees; a rate window is a JSON list of
its grants' times.

Invariants: a write that depends on the value read (`set_nx`, `incr`, `set_add`,
`window_acquire`) is one compare-and-set loop, so it is atomic across processes; an expired
value reads as absent, is replaced over its revision, and is deleted by `scan` when met or by
`expire`, a bounded walk of the stream that the workers' housekeeping runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence

from conveyor.engines.base import StateStore
from conveyor.engines.kit import OnClient, check_window
from conveyor.engines.nats.client import EXPIRES, NatsClient, Stored, has_expired
from conveyor.engines.nats.keys import Keys, escape
from conveyor.errors import BrokerError

__all__ = ["NatsStore"]

#: Messages read per request, and requests per call, of `NatsStore.expire`.
_EXPIRE_BATCH, _EXPIRE_BATCHES = 256, 8


def _left(entry: Stored) -> float | None:
    """The seconds a live entry has left, None when it does not expire."""
    expires = entry.headers.get(EXPIRES)
    return None if expires is None else float(expires) - time.time()


class NatsStore(OnClient[NatsClient], StateStore):
    """`StateStore` on the app's `P_kv` stream, shared by every process using the server.

    Args:
        client: the app's client, shared with the transport and the result store.
    """

    def __init__(self, client: NatsClient) -> None:
        self.client, self.safe_url = client, client.safe_url
        self._values = Keys(client, "kv", "kv", split=True)
        self._sets = Keys(client, "kv", "set", split=True)

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        return await self._values.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order: one listing of their common leading segments,
        then one direct get per key present."""
        if len(keys) < 2:
            return [await self.get(key) for key in keys]
        held = await self._values.present(keys)
        values = dict(zip(held, await asyncio.gather(*(self.get(k) for k in held)), strict=True))
        return [values.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self._values.put(key, value, ttl)

    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        return await self._values.create(key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""
        return await self._values.delete(key)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key; `ttl` applies when this call creates it."""

        def add(live: Stored | None) -> tuple[bytes, float | None]:
            if live is None:
                return str(amount).encode(), ttl
            try:
                return str(int(live.data) + amount).encode(), _left(live)
            except ValueError:
                raise BrokerError(f"key {key!r} does not hold an integer") from None

        return int(await self._values.update(key, add) or 0)

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value (expired ones met are deleted).

        Lists the subjects under the prefix's complete segments (`worker:` lists `P.kv.worker.>`).
        """
        root = ".".join([self._values.root, *map(escape, prefix.split(":")[:-1]), ">"])
        counts = await self.client.subject_counts("kv", root)
        keys = [k for k in map(self._values.key, counts) if k.startswith(prefix)]
        entries = await asyncio.gather(*map(self._values.read, keys))
        expired = [e.seq for e in entries if e is not None and e.expired]
        await asyncio.gather(*(self.client.delete("kv", seq) for seq in expired))
        return {k: e.data for k, e in zip(keys, entries, strict=True) if e and not e.expired}

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """Add `member` to the set at `key` and return its size; a `ttl` renews its expiry."""
        size = 0

        def add(live: Stored | None) -> tuple[bytes, float | None] | None:
            nonlocal size
            old = set(json.loads(live.data)) if live else set()
            size = len(new := old | {member})
            if new == old and ttl is None:
                return None  # nothing changes
            return json.dumps(sorted(new)).encode(), _left(live) if ttl is None and live else ttl

        await self._sets.update(key, add)
        return size

    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of `limit` grants per sliding `period` (a JSON log of the grants' times,
        changed by compare-and-set); else the seconds until the oldest grant leaves."""
        check_window(limit, period)
        wait = 0.0

        def take(live: Stored | None) -> tuple[bytes, float | None] | None:
            nonlocal wait
            now = time.time()
            grants = [t for t in json.loads(live.data if live else b"[]") if t > now - period]
            if len(grants) >= limit:
                wait = max(min(grants) + period - now, 1e-6)
                return None
            return json.dumps([*grants, now]).encode(), period

        await self._values.update(key, take)
        return wait

    async def expire(self, start: int) -> int:
        """Delete expired values from stream sequence `start` on, reading a bounded number.

        Returns where the next call starts: 0 once the end of the stream was reached.
        """
        # Reads without acks; the server drops it a minute after its last use.
        config = {"ack_policy": "none", "inactive_threshold": 60 * 10**9}
        config |= {"deliver_policy": "by_start_sequence", "opt_start_seq": max(start, 1)}
        body = {"stream_name": (stream := self.client.stream("kv")), "config": config}
        walker = str((await self.client.api(f"CONSUMER.CREATE.{stream}", body))["name"])
        try:
            for _ in range(_EXPIRE_BATCHES):
                msgs = await self.client.pull("kv", walker, _EXPIRE_BATCH)
                dead = [int(m.metadata.sequence.stream) for m in msgs if has_expired(m.headers)]
                await asyncio.gather(*(self.client.delete("kv", seq) for seq in dead))
                if len(msgs) < _EXPIRE_BATCH:
                    return 0
                start = int(msgs[-1].metadata.sequence.stream) + 1
            return start
        finally:
            with contextlib.suppress(BrokerError):
                await self.client.api(f"CONSUMER.DELETE.{stream}.{walker}")
