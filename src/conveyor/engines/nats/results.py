"""Results in JetStream: one subject per task and kind in the stream `P_results`.

Subjects (P = prefix, T = escaped task id; one message kept per subject): `P.r.res.T` result,
`P.r.p.T` progress; a generator's stream is one message per item, `P.r.gi.T.<n>` for item n,
and a head `P.r.gh.T` (`o<count>`, `c<count>` once closed).

Invariants: the head is moved on by compare-and-set only after the items it counts are stored,
so readers never see a gap; a TTL travels in the `Conveyor-Expires` header and expired values
read as absent (a stream's TTL is its head's); `P_results`' age limit (7 days) removes what
expired. `watch` subscribes (core NATS) to the result's subject, so the contract's
`wait_result` wakes at once when a result is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable

from conveyor.engines.base import ResultBackend, StreamChunk
from conveyor.engines.kit import OnClient
from conveyor.engines.nats.client import Msg, NatsClient, Stored
from conveyor.engines.nats.keys import Keys, escape
from conveyor.errors import BrokerConnectionError

__all__ = ["NatsResultBackend"]

_OPEN, _CLOSED = b"o", b"c"
#: Most items one `read_stream` returns (one direct get each, concurrently).
_READ_AT_MOST = 256


class NatsResultBackend(OnClient[NatsClient], ResultBackend):
    """Keeps results, progress and generator streams in JetStream.

    Args:
        client: the app's client, shared with its transport and state store.
        default_ttl: seconds a result is kept when the task sets no `result_ttl`; None keeps it
            (up to the stream's age limit).
    """

    def __init__(self, client: NatsClient, *, default_ttl: float | None = 24 * 3600.0) -> None:
        self.client, self.default_ttl = client, default_ttl
        self._results = Keys(client, "results", "r.res")
        self._progress = Keys(client, "results", "r.p")
        self._heads = Keys(client, "results", "r.gh")

    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the result (its publish also wakes every waiter)."""
        await self._results.put(task_id, data, ttl)

    async def get_result(self, task_id: str) -> bytes | None:
        """The stored result, or None."""
        return await self._results.get(task_id)

    async def watch(
        self, task_id: str, wake: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Subscribe (core NATS) to the result's subject; None while NATS cannot be reached."""

        async def announced(_msg: Msg) -> None:
            wake()

        try:
            nc = await self.client.connection()
            sub = await nc.subscribe(self._results.subject(task_id), cb=announced)
        except BrokerConnectionError:
            return None

        async def unwatch() -> None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()

        return unwatch

    async def delete(self, task_id: str) -> None:
        """Forget everything stored for a task (a purge of every kind's subject and one of the
        stream's items)."""
        every = self.client.subject("r", "*", escape(task_id))
        await asyncio.gather(self.client.purge("results", every), self._drop_items(task_id))

    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report."""
        await self._progress.put(task_id, data, ttl)

    async def get_progress(self, task_id: str) -> bytes | None:
        """The latest progress report, or None."""
        return await self._progress.get(task_id)

    def _item(self, task_id: str, n: int) -> str:
        return self.client.subject("r", "gi", escape(task_id), str(n))

    async def _drop_items(self, task_id: str) -> None:
        await self.client.purge("results", self.client.subject("r", "gi", escape(task_id), ">"))

    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Store a generator's items, then count them in the head; the stream's TTL restarts.

        The head's TTL is the stream's: items outlive it (until the stream's age limit) and
        are overwritten when a stream of the same id starts again.
        """
        while True:
            entry = await self._heads.read(task_id)
            closed, count = _head(entry)
            subjects = [self._item(task_id, n) for n in range(count, count + len(items))]
            await asyncio.gather(*map(self.client.publish, subjects, items))
            value = (_CLOSED if closed else _OPEN) + str(count + len(items)).encode()
            if await self._heads.put_if(task_id, value, ttl, entry.seq if entry else 0) is not None:
                return

    async def reset_stream(self, task_id: str) -> None:
        """Drop a stream so a redelivered generator starts afresh.

        A first run has no head and skips the purge of items: a purge by subject makes
        nats-server 2.9 read every block of the stream. Items without a head (a worker that
        died between the two writes of `push_stream`) are never read: a reader stops at the
        head's count, and the new run writes over them.
        """
        if await self._heads.delete(task_id):
            await self._drop_items(task_id)

    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark the stream finished."""
        await self._heads.update(task_id, lambda live: (_CLOSED + b"%d" % _head(live)[1], ttl))

    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Items from `offset` on (at most `_READ_AT_MOST`), the next offset, and whether the
        stream is closed."""
        closed, count = _head(await self._heads.read(task_id))
        wanted = range(offset, min(count, offset + _READ_AT_MOST))
        subjects = [self._item(task_id, n) for n in wanted]
        found = await asyncio.gather(*(self.client.get("results", s) for s in subjects))
        # An item removed by the age limit ends the read.
        items = [stored.data for stored in itertools.takewhile(bool, found) if stored]
        at = offset + len(items)
        return at, items, closed and (at >= count or len(items) < len(wanted))


def _head(entry: Stored | None) -> tuple[bool, int]:
    """(closed, item count) of a stream's head; an absent or expired one is open and empty."""
    if entry is None or entry.expired or not entry.data:
        return False, 0
    return entry.data[:1] == _CLOSED, int(entry.data[1:] or b"0")
