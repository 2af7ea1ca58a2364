"""Small atomic state on a JetStream stream used as a key/value bucket.

Each key is one subject of the app's `kv` stream (one message kept per subject). "Only if
absent" and compare-and-set are publishes with `Nats-Expected-Last-Subject-Sequence` (0 for
absent, else the revision read), retried when another writer wins. nats-server before 2.11 has
no per-message TTL, so a value's expiry travels in its `Conveyor-Expires` header: an expired
value reads as absent and is replaced by compare-and-set over its revision; `expire` walks the
stream a bounded batch at a time and deletes expired values that nobody writes again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from conveyor.errors import BrokerError, ConfigurationError
from conveyor.transports._nats_client import NatsClient, WrongSequence
from conveyor.transports._nats_conn import Stored, escape, expiry, has_expired
from conveyor.transports._nats_conn import unescape as _unescape

__all__ = ["NatsState"]

_EXPECT = "Nats-Expected-Last-Subject-Sequence"
#: Messages read per request, and requests per call, of `NatsState.expire`.
_EXPIRE_BATCH, _EXPIRE_BATCHES = 256, 8

#: Given the live value (None when absent), return (new value, ttl) or None to change nothing.
Update = Callable[[bytes | None], "tuple[bytes, float | None] | None"]


class NatsState:
    """The transport's key/value primitives over one stream (`kv` by default)."""

    def __init__(self, client: NatsClient, kind: str = "kv", token: str = "kv") -> None:
        self.client, self.kind, self.token = client, kind, token

    def subject(self, key: str) -> str:
        """The subject holding `key`."""
        return self.client.subject(self.token, escape(key))

    async def read(self, key: str) -> Stored | None:
        """The stored entry of `key`, expired or not."""
        return await self.client.get(self.kind, self.subject(key))

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        entry = await self.read(key)
        return None if entry is None or entry.expired else entry.data

    async def put(self, key: str, value: bytes, ttl: float | None) -> int:
        """Store `key` unconditionally; return its revision."""
        answer = await self.client.publish(self.subject(key), value, expiry(ttl))
        return int(answer["seq"])

    async def put_if(self, key: str, value: bytes, ttl: float | None, revision: int) -> int | None:
        """Store `key` if its revision is still `revision` (0: absent); else None."""
        headers = {**expiry(ttl), _EXPECT: str(revision)}
        try:
            answer = await self.client.publish(self.subject(key), value, headers)
        except WrongSequence:
            return None
        return int(answer["seq"])

    async def delete(self, key: str) -> bool:
        """Remove `key` (no tombstone is left); False when it held no value.

        By its sequence, not by a purge of its subject: nats-server 2.9 reads every block of
        the stream for such a purge (about 10 ms of its CPU per key once the blocks have left
        its cache, against 0.3 ms for a read and a delete by sequence; bench/NOTES.md).
        """
        entry = await self.read(key)
        if entry is None:
            return False
        await self.client.delete(self.kind, entry.seq)
        return True

    async def delete_later(self, key: str) -> None:
        """`delete`, without waiting for the server to confirm the removal."""
        entry = await self.read(key)
        if entry is not None:
            await self.client.delete_later(self.kind, entry.seq)

    async def update(self, key: str, change: Update) -> bytes | None:
        """Apply `change` to the live value atomically (a compare-and-set loop).

        Returns the value stored, or None when `change` chose to store nothing.
        """
        while True:
            entry = await self.read(key)
            live = None if entry is None or entry.expired else entry.data
            wanted = change(live)
            if wanted is None:
                return None
            value, ttl = wanted
            if await self.put_if(key, value, ttl, 0 if entry is None else entry.seq) is not None:
                return value

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value (expired ones are removed)."""
        counts = await self.client.subject_counts(self.kind, self.client.subject(self.token, ">"))
        start = len(self.client.subject(self.token, ""))
        keys = [k for k in (_unescape(s[start:]) for s in counts) if k.startswith(prefix)]
        found: dict[str, bytes] = {}
        for key in keys:
            entry = await self.read(key)
            if entry is None:
                continue
            if entry.expired:  # by sequence: a value written again meanwhile stays
                await self.client.delete(self.kind, entry.seq)
            else:
                found[key] = entry.data
        return found

    async def expire(self, start: int) -> int:
        """Delete expired values from stream sequence `start` on, reading a bounded number.

        Returns where the next call starts: 0 once the end of the stream was reached. Deleting
        by sequence spares a value written again meanwhile (it has a new sequence).
        """
        walker = await self.client.walker(self.kind, start)
        try:
            for _ in range(_EXPIRE_BATCHES):
                msgs = await self.client.pull(self.kind, walker, _EXPIRE_BATCH)
                dead = [int(m.metadata.sequence.stream) for m in msgs if has_expired(m.headers)]
                await asyncio.gather(*(self.client.delete(self.kind, seq) for seq in dead))
                if len(msgs) < _EXPIRE_BATCH:
                    return 0
                start = int(msgs[-1].metadata.sequence.stream) + 1
            return start
        finally:
            await self.client.drop_consumer(self.kind, walker)

    # -- the contract's primitives ------------------------------------------------------------

    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent or expired; True when this call stored it."""
        stored = False

        def claim(live: bytes | None) -> tuple[bytes, float | None] | None:
            nonlocal stored
            stored = live is None
            return (value, ttl) if live is None else None

        await self.update(key, claim)
        return stored

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        """Add `amount` to an integer key; the ttl starts when the key is made."""
        entry_ttl: list[float | None] = [ttl]

        def add(live: bytes | None) -> tuple[bytes, float | None]:
            if live is None:
                return str(amount).encode(), ttl
            try:
                number = int(live)
            except ValueError:
                raise BrokerError(f"kv key {key!r} does not hold an integer") from None
            return str(number + amount).encode(), entry_ttl[0]

        async def keep_expiry() -> None:
            entry = await self.read(key)
            if entry is not None and not entry.expired:
                expires = entry.headers.get("Conveyor-Expires")
                entry_ttl[0] = None if expires is None else float(expires) - time.time()

        await keep_expiry()
        stored = await self.update(key, add)
        assert stored is not None
        return int(stored)

    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one grant of at most `limit` per sliding `period`; else the seconds to wait."""
        if limit < 1 or period <= 0:
            raise ConfigurationError(f"a rate limit needs limit >= 1 and period > 0, not {limit}")
        wait = 0.0

        def take(live: bytes | None) -> tuple[bytes, float | None] | None:
            nonlocal wait
            now = time.time()
            grants = [t for t in json.loads(live or b"[]") if t > now - period]
            if len(grants) >= limit:
                wait = max(min(grants) + period - now, 0.001)
                return None
            wait = 0.0
            return json.dumps([*grants, now]).encode(), period

        await self.update(key, take)
        return wait

    async def set_add(self, key: str, member: str, ttl: float | None) -> int:
        """Add `member` to the set at `key` (again changes nothing but renewing `ttl`); return
        the set's size."""
        size = 0

        def add(live: bytes | None) -> tuple[bytes, float | None] | None:
            nonlocal size
            members = set(json.loads(live or b"[]"))
            size = len(members | {member})
            if member in members and ttl is None:
                return None  # nothing changes (with a ttl, each call renews it)
            return json.dumps(sorted(members | {member})).encode(), ttl

        await self.update(key, add)
        return size
