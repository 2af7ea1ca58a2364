"""The production transport: Redis Streams with one consumer group per queue and priority band.

Each queue has ten streams, one per priority band, read highest band first; a message is a
stream entry until it is acked, when it is XACK-ed and XDEL-ed (so a stream only holds waiting
and running messages and stays bounded by the backlog). A delivery is leased while its entry is
pending: a live worker renews it (XCLAIM ... JUSTID resets the idle time), and once a lease has
been idle longer than `lease_seconds` the next fetch by any worker reclaims it (XPENDING IDLE +
XCLAIM, which also yields its delivery count). Delayed and retrying messages wait in a sorted set
and are moved to their stream by whichever worker's fetch sees them due. All of it is in
`redis.lua`, whose header documents every key for `redis-cli`.

Commands issued in one event-loop turn share one round trip (see `_redis_client`), so a burst of
`kiq`s, acks and result writes costs one pipeline, and an ack carries its result write.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from conveyor.errors import BrokerError, ConfigurationError
from conveyor.results.base import ResultBackend
from conveyor.transports._redis_client import RedisClient
from conveyor.transports.base import (
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
    Transport,
    TransportState,
)

__all__ = ["RedisTransport"]

GROUP = "workers"
_CANCEL_TTL = 3600
_CANCEL_REREAD_SECONDS = 5.0
#: How often a producer re-adds its queues to `P:queues` (in case the set was deleted).
_NOTE_QUEUES_SECONDS = 10.0
_BANDS = range(10)


class _Receipt:
    """Where a delivery lives and the token that proves the lease is still ours."""

    __slots__ = ("band", "entry", "stream", "token")

    def __init__(self, stream: str, band: str, entry: str, token: int) -> None:
        self.stream, self.band, self.entry, self.token = stream, band, entry, token


class _QueueKeys:
    """The keys of one queue (see `redis.lua`): its base, ids hash, and streams highest first."""

    __slots__ = ("base", "ids", "streams")

    def __init__(self, base: str) -> None:
        self.base, self.ids = base, f"{base}:ids"
        self.streams = [f"{base}:s:{band}" for band in _BANDS[::-1]]


class RedisTransport(Transport):
    """Messages on Redis Streams, small state in plain keys, all under one key prefix.

    Args:
        url: a Redis URL (see `RedisClient`).
        prefix: namespace of every key, so several apps can share one Redis.
        lease_seconds: how long a delivery stays leased without `extend`; a crashed worker's
            messages are delivered again about this long after its last renewal.
        dead_letter_limit: newest dead letters kept per queue (older ones are trimmed).
        client: a `RedisClient` to share with a `RedisResultBackend`.
    """

    tracks_state = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "conveyor",
        lease_seconds: float = 30.0,
        dead_letter_limit: int = 100_000,
        client: RedisClient | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.client = client or RedisClient(url, prefix)
        self.safe_url = self.client.safe_url
        self.lease_seconds = lease_seconds
        self.dead_letter_limit = dead_letter_limit
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._reclaim_every = min(max(lease_seconds / 4, 0.05), 1.0)
        self._last_reclaim = 0.0
        self._queues_noted: set[str] = set()  # queues added to P:queues in this period ...
        self._note_queues_at = 0.0  # ... which ends then (in case the set was deleted)
        self._queue_keys: dict[str, _QueueKeys] = {}  # see `_keys`
        self._cancelled: dict[str, float] = {}  # task id -> when the control channel said so
        self._listening: Any = None  # the loop client whose pub/sub carries the control channel
        self._last_cancel_read = 0.0

    async def startup(self) -> None:
        """Check Redis answers and load the scripts."""
        await self.client.startup()

    async def shutdown(self) -> None:
        """Close this event loop's connections."""
        await self.client.close()

    # -- keys -------------------------------------------------------------------------------------

    def _keys(self, queue: str) -> _QueueKeys:
        """The queue's key names, built once per queue."""
        keys = self._queue_keys.get(queue)
        if keys is None:
            keys = self._queue_keys[queue] = _QueueKeys(self.client.queue_base(queue))
        return keys

    def _script(
        self, name: str, queue: str, *args: Any, keys: Sequence[str] = ()
    ) -> asyncio.Future[Any]:
        q = self._keys(queue)
        return self.client.script(name, [q.ids, *keys], [q.base, GROUP, *args])

    async def _queues(self) -> list[str]:
        members = await self.client.call("SMEMBERS", self.client.key("queues"))
        return sorted(m.decode() for m in members)

    # -- messages -------------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Add messages to their streams (or the delayed set), one script call per queue."""
        by_queue: dict[str, list[Any]] = {}
        for m in messages:
            args = by_queue.get(m.queue)
            if args is None:
                args = by_queue[m.queue] = []
            due = "" if m.eta is None else int(m.eta * 1000)
            args += (m.task_id, min(max(int(m.priority), 0), 9), due, m.body)
        calls = [self._script("publish", queue, *args) for queue, args in by_queue.items()]
        now = time.monotonic()
        if now >= self._note_queues_at:  # each queue is added again on its next publish
            self._queues_noted.clear()
            self._note_queues_at = now + _NOTE_QUEUES_SECONDS
        if not by_queue.keys() <= self._queues_noted:
            calls.append(self.client.call("SADD", self.client.key("queues"), *by_queue))
            self._queues_noted.update(by_queue)
        if len(calls) == 1:
            await calls[0]
        elif calls:
            await asyncio.gather(*calls)

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, blocking on the streams for up to `timeout`.

        An empty `queues` reads every queue that has ever been published to.
        """
        if max_count <= 0:
            return []
        deadline = time.monotonic() + timeout
        while True:
            names = list(dict.fromkeys(queues)) or await self._queues()
            reclaim = time.monotonic() - self._last_reclaim >= self._reclaim_every
            if reclaim:
                self._last_reclaim = time.monotonic()
            got, ready, due = await self._fetch(names, max_count, reclaim)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            got = await self._block(ready, due, max_count, min(left, self._reclaim_every))
            if got:
                return got

    async def _fetch(
        self, queues: list[str], count: int, reclaim: bool
    ) -> tuple[list[Delivery], list[str], float]:
        """Lease what is ready; also say which queues can be blocked on and the next due time."""
        deliveries: list[tuple[int, Delivery]] = []
        ready: list[str] = []
        next_due = -1.0
        lease_ms = int(self.lease_seconds * 1000)
        for queue in queues:
            left = count - len(deliveries)
            want_wake = "1" if left > 0 else "0"
            out, blockable, due = await self._script(
                "fetch", queue, self._consumer, max(left, 0), lease_ms, int(reclaim), want_wake
            )
            streams = self._keys(queue).streams  # highest band first
            for band, entry, task_id, body, n, token in out:
                stream = streams[9 - band]
                receipt = _Receipt(stream, str(band), entry.decode(), int(token))
                delivery = Delivery(task_id.decode(), queue, body, int(n), receipt)
                deliveries.append((-int(band), delivery))
            if int(blockable):
                ready.append(queue)
            if due >= 0 and (next_due < 0 or due < next_due):
                next_due = float(due)
        deliveries.sort(key=lambda item: item[0])  # stable: bands across queues, then order
        return [d for _, d in deliveries], ready, next_due

    async def _block(
        self, queues: list[str], due_ms: float, count: int, longest: float
    ) -> list[Delivery]:
        """Wait in XREADGROUP for new entries of `queues` (leased at once when they come), until
        a delayed message is due or `longest` seconds."""
        if due_ms >= 0:
            longest = min(longest, max((due_ms - time.time() * 1000) / 1000, 0.0))
        if self.client.cluster and queues:  # one XREADGROUP may read only one slot
            queues = queues[:1]
        block_ms = int(longest * 1000)
        if block_ms <= 0:
            return []
        if not queues:
            await asyncio.sleep(longest)
            return []
        streams = [key for q in queues for key in self._keys(q).streams]
        command = ("XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", count, "BLOCK", block_ms)
        try:
            reply = await self.client.blocking(*command, "STREAMS", *streams, *[">"] * len(streams))
        except BrokerError as exc:
            if "NOGROUP" not in str(exc):  # a stream was deleted: the next fetch remakes it
                raise
            return []
        got = [d for key, entries in reply or () for d in self._entries(key, entries)]
        if len(reply or ()) > 1:  # streams come highest band first, within one queue
            got.sort(key=lambda d: -int(d.receipt.band))
        for extra in got[count:]:  # several bands filled at once: hand back what is too many
            await self.release(extra)
        return got[:count]

    def _entries(self, key: Any, entries: Any) -> list[Delivery]:
        stream = key.decode() if isinstance(key, bytes) else str(key)
        base, _, band = stream.rpartition(":s:")
        queue = base[len(self.client.prefix) + 2 : -1]  # P:{Q} -> Q
        out = []
        for entry, flat in entries:
            fields = _fields(flat)
            receipt = _Receipt(stream, band, entry.decode(), 1)
            n = int(fields[b"n"]) + 1
            out.append(Delivery(fields[b"t"].decode(), queue, fields[b"b"], n, receipt))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries this consumer still holds; a lost lease settles nothing."""
        await asyncio.gather(*(self._ack(d, None, None, None) for d in deliveries))

    async def ack_with_result(
        self, delivery: Delivery, results: ResultBackend, data: bytes | None, ttl: float | None
    ) -> None:
        """Store the result and ack in one script call when `results` is this Redis."""
        from conveyor.results.redis import RedisResultBackend

        same = isinstance(results, RedisResultBackend) and results.client is self.client
        if data is None or (same and not self.client.cluster):
            await self._ack(delivery, results if data is not None else None, data, ttl)
        else:
            await super().ack_with_result(delivery, results, data, ttl)

    async def _ack(
        self, delivery: Delivery, results: Any, data: bytes | None, ttl: float | None
    ) -> None:
        r = _receipt(delivery)
        keys, extra = [r.stream], [delivery.task_id.encode()]
        if results is not None and data is not None:
            keys.append(results.result_key(delivery.task_id))
            ttl_ms = b"" if ttl is None else b"%d" % max(int(ttl * 1000), 1)
            extra += [data, ttl_ms, results.done_channel(delivery.task_id).encode()]
        await self._script(
            "ack", delivery.queue, self._consumer, r.entry, r.token, *extra, keys=keys
        )

    async def release(
        self,
        delivery: Delivery,
        *,
        body: bytes | None = None,
        delay: float = 0.0,
        retrying: bool = False,
    ) -> None:
        """Put a held delivery back, optionally with a new body and not before `delay` s."""
        r = _receipt(delivery)
        args: list[Any] = [
            self._consumer,
            r.entry,
            r.token,
            delivery.task_id,
            r.band,
            delivery.deliveries,
            max(int(delay * 1000), 0),
            "r" if retrying else "d",
        ]
        if body is not None:
            args.append(body)
        await self._script("release", delivery.queue, *args, keys=[r.stream])

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases this consumer still holds."""
        await asyncio.gather(
            *(
                self._script("extend", d.queue, self._consumer, r.entry, r.token, keys=[r.stream])
                for d in deliveries
                for r in (_receipt(d),)
            )
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a held delivery to its queue's dead-letter stream."""
        r = _receipt(delivery)
        await self._script(
            "dead_letter",
            delivery.queue,
            self._consumer,
            r.entry,
            r.token,
            delivery.task_id,
            r.band,
            delivery.queue,
            reason,
            self.dead_letter_limit,
            keys=[r.stream],
        )

    # -- cancellation and state -------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Delete a waiting message (True), or ask the worker running it to stop (False)."""
        for queue in await self._queues():
            found = await self._script("cancel", queue, task_id)
            if found == 1:
                return True
            if found == 2:
                break
        key = self.client.key("cancel", task_id)
        await self.client.calls(
            [
                ("SET", key, b"1", "EX", _CANCEL_TTL),
                ("PUBLISH", self.client.key("control"), task_id.encode()),
            ]
        )
        return False

    async def cancel_requested(self, task_ids: Sequence[str]) -> set[str]:
        """Return which of these task ids have a live cancel request.

        A worker listens on the control channel, so this is answered from memory; the cancel
        keys are read too every few seconds, for requests made while the channel was down.
        """
        here = self.client.here()
        if self._listening is not here:
            channel = self.client.key("control").encode()
            await here.watch(channel, self._on_control)
            self._listening = here
            self._last_cancel_read = 0.0
        now = time.monotonic()
        for task_id, when in list(self._cancelled.items()):
            if now - when > _CANCEL_TTL:
                del self._cancelled[task_id]
        wanted = {t for t in task_ids if t in self._cancelled}
        if task_ids and now - self._last_cancel_read >= _CANCEL_REREAD_SECONDS:
            self._last_cancel_read = now
            keys = [self.client.key("cancel", t) for t in task_ids]
            values = await self.client.call("MGET", *keys)
            wanted.update(t for t, v in zip(task_ids, values, strict=True) if v is not None)
        return wanted

    def _on_control(self, data: bytes) -> None:
        self._cancelled[data.decode(errors="replace")] = time.monotonic()

    async def state(self, task_id: str) -> TransportState | None:
        """Where the message is: queued, running, scheduled, retrying, or None."""
        for queue in await self._queues():
            found = await self._script("state", queue, task_id)
            if found:
                return str(found.decode())
        return None

    # -- inspection and operations -------------------------------------------------------------

    async def queue_stats(self) -> list[QueueStats]:
        """Counts of every queue that holds messages."""
        stats = []
        for queue in await self._queues():
            ready, scheduled, running = await self._script("stats", queue)
            if ready or scheduled or running:
                stats.append(QueueStats(queue, int(ready), int(scheduled), int(running)))
        return stats

    async def purge(self, queue: str | None = None) -> int:
        """Delete waiting messages of one queue or all; running ones are kept."""
        queues = [queue] if queue is not None else await self._queues()
        return sum([int(await self._script("purge", q)) for q in queues])

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered messages of every queue, oldest first."""
        letters = []
        for queue in await self._queues():
            key = f"{self.client.queue_base(queue)}:dead"
            for _, flat in await self.client.call("XRANGE", key, "-", "+", "COUNT", limit):
                fields = _fields(flat)
                letters.append(
                    DeadLetter(
                        task_id=fields[b"t"].decode(),
                        queue=fields[b"q"].decode(),
                        body=fields[b"b"],
                        reason=fields[b"r"].decode(errors="replace"),
                        failed_at=float(fields[b"f"]),
                    )
                )
        letters.sort(key=lambda d: d.failed_at)
        return letters[:limit]

    async def requeue_dead(self, task_ids: Sequence[str] | None = None) -> int:
        """Move dead letters (all when None) back to their queues."""
        chosen = ["1"] if task_ids is None else ["0", *task_ids]
        queues = await self._queues()
        return sum([int(await self._script("requeue_dead", q, *chosen)) for q in queues])

    # -- small atomic state ------------------------------------------------------------------------

    def _kv(self, key: str) -> str:
        return self.client.key("kv", key)

    async def set_nx(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `key` only if absent; True when this call stored it."""
        expiry = () if ttl is None else ("PX", max(int(ttl * 1000), 1))
        return bool(await self.client.call("SET", self._kv(key), value, "NX", *expiry))

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        expiry = () if ttl is None else ("PX", max(int(ttl * 1000), 1))
        await self.client.call("SET", self._kv(key), value, *expiry)

    async def kv_get(self, key: str) -> bytes | None:
        """The value of a live key, or None."""
        value: bytes | None = await self.client.call("GET", self._kv(key))
        return value

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value."""
        start = self._kv("")
        pattern = start + _glob_escape(prefix) + "*"
        keys = await self.client.scan(pattern)
        if not keys:
            return {}
        values = await self.client.call("MGET", *keys)
        return {
            k.decode()[len(start) :]: v for k, v in zip(keys, values, strict=True) if v is not None
        }

    async def kv_delete(self, key: str) -> None:
        """Delete a key if present."""
        await self.client.call("DEL", self._kv(key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add `amount` to an integer key; the ttl starts when the key is made."""
        ttl_ms = "" if ttl is None else max(int(ttl * 1000), 1)
        try:
            return int(await self.client.script("incr", [self._kv(key)], [amount, ttl_ms]))
        except BrokerError as exc:
            if "not an integer" in str(exc):
                raise BrokerError(f"kv key {key!r} does not hold an integer") from None
            raise

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """SADD and SCARD in one script; `ttl` renews the set's expiry."""
        ttl_ms = "" if ttl is None else max(int(ttl * 1000), 1)
        found = await self.client.script("set_add", [self.client.key("set", key)], [member, ttl_ms])
        return int(found)

    async def rate_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one grant of at most `limit` per sliding `period`; else the seconds to wait."""
        if limit < 1 or period <= 0:
            raise ConfigurationError(f"a rate limit needs limit >= 1 and period > 0, not {limit}")
        wait = await self.client.script(
            "rate", [self.client.key("rate", key)], [limit, period * 1000]
        )
        return float(wait)


def _receipt(delivery: Delivery) -> _Receipt:
    receipt = delivery.receipt
    if not isinstance(receipt, _Receipt):
        raise TypeError(f"delivery {delivery.task_id!r} did not come from a RedisTransport")
    return receipt


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _fields(flat: Any) -> dict[bytes, bytes]:
    """A stream entry's fields: a flat list from the bare connection, a dict from redis-py."""
    return flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
