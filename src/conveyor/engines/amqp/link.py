"""The connection side of `AmqpTransport`: options, topology, publishing with confirms.

`AmqpLink` owns the robust connection (in its `IoThread`: every other call that touches it runs
there), declares queues and exchanges on first use (see `transport.py` for the layout) and
publishes; `AmqpTransport` adds consuming, leases and settling on top. `publish` alone runs on
the caller's loop, on that loop's own connection (`outbox.py`), declaring through the I/O
thread only what is new. The index lives in the state store it is given (`records.py`); that
store is thread-safe, so it is awaited from either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from conveyor._urls import float_option, safe_url
from conveyor.engines.amqp.delivered import Delivered
from conveyor.engines.amqp.outbox import LOST, REFUSED, Outbox, open_channel, publish
from conveyor.engines.amqp.records import (
    DROPPED,
    LOCAL_RECORD_TTL,
    RECORD_TTL,
    Record,
    delay_bucket,
    new_tag,
    split_url,
)
from conveyor.engines.amqp.unsettled import Unsettled
from conveyor.engines.base import DEFAULT_LEASE_SECONDS, MessageTransport, Outgoing, StateStore
from conveyor.engines.kit import check_lease
from conveyor.engines.loops import IoThread, PerLoop, reset_after_fork, together
from conveyor.errors import BrokerConnectionError, BrokerError
from conveyor.logs import named_line

__all__ = ["AmqpLink", "on_io"]

L = TypeVar("L", bound="AmqpLink")
P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("conveyor.amqp")

_PER_PROCESS_WARNING = (
    "%s keeps no shared state: rate limits, unique_for, cancelling a task another process "
    "holds, task states, schedules' exactly-once and workflows are per-process; pass "
    "state_url (redis://... or sqlite:///state.db) to share them"
)


def on_io(
    method: Callable[Concatenate[L, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[L, P], Coroutine[Any, Any, T]]:
    """Make a coroutine method run on the connection's thread, whichever loop awaits it; a lost
    connection is raised as `BrokerConnectionError` (`AmqpLink._error`), anything else as it is."""

    async def on_thread(self: L, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await self._io.run(method(self, *args, **kwargs))
        except LOST as exc:
            raise self._error(exc) from None

    functools.update_wrapper(on_thread, method)  # its name and docstring
    return on_thread


class AmqpLink(MessageTransport):
    """A RabbitMQ connection with the queues of one prefix and a state store (see
    `AmqpTransport` for the arguments)."""

    def __init__(
        self,
        url: str,
        *,
        store: StateStore,
        prefix: str = "conveyor",
        lease_seconds: float | None = None,
        linger_seconds: float = 0.0,
    ) -> None:
        self.url, query = split_url(url)
        self.safe_url = safe_url(self.url)
        self.prefix = query.get("prefix") or prefix
        lease = float_option(query, "lease", url)
        self.lease_seconds = (lease_seconds or DEFAULT_LEASE_SECONDS) if lease is None else lease
        check_lease(self.lease_seconds)
        self.linger_seconds = linger_seconds
        self.store = store
        self._warned = False
        self._io = IoThread("conveyor-amqp")
        self._outboxes = PerLoop(lambda _loop: Outbox(self.url, self.safe_url), Outbox.close)
        self._seq = itertools.count()
        self._chores: set[asyncio.Task[Any]] = set()
        self._reset()
        reset_after_fork(self._forget)

    def _reset(self) -> None:
        """No connection yet: no channel, consumers, declarations, buffer or leases."""
        self._conn: Any = None
        self._channel: Any = None
        self._queues: dict[str, Any] = {}
        self._consuming: dict[str, tuple[Any, str]] = {}  # queue -> aiormq channel, consumer tag
        self._buckets: set[int] = set()  # delay buckets declared
        self._topology = asyncio.Lock()
        self._acking = asyncio.Lock()  # one batch of acks at a time (`AmqpAcks.ack`)
        self._unsettled = Unsettled()
        self._buffer: list[tuple[int, int, str, Delivered]] = []
        self._arrived = asyncio.Event()
        self._prefetch = 0
        self._lower_since = 0.0  # since when receives have asked for less than the prefetch
        self._leased: set[Any] = set()  # `Receipt`s of live leases

    def _forget(self) -> list[Any]:
        """In a forked child: drop the parent's connection, consumers and leases, unused."""
        dropped = [self._conn, self._channel, self._queues, self._buckets, self._buffer]
        dropped += [self._leased, self._chores]
        self._reset()
        self._chores = set()
        return dropped

    # -- names and connection ---------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"amqp:{self.prefix}:{kind}:{name}"

    async def _record(self, task_id: str) -> Record | None:
        return Record.decode(await self.store.get(self._key("m", task_id)))

    async def _put(self, task_id: str, record: Record, now: float) -> None:
        """Write the index record of a task id."""
        keep = RECORD_TTL if self.store.shared else LOCAL_RECORD_TTL
        await self.store.set(self._key("m", task_id), record.encode(), record.ttl(now, keep))

    def queue_name(self, queue: str) -> str:
        """The RabbitMQ queue of a conveyor queue."""
        return f"{self.prefix}.{queue}"

    async def startup(self) -> None:
        """Connect (with publisher confirms; a loop's publishing connection opens at its first
        publish); warn once when the state store is per-process."""
        await self._io.run(self._ready())
        await self.store.startup()
        if not self.store.shared and not self._warned:
            self._warned = True
            log.warning(_PER_PROCESS_WARNING, type(self).__name__)

    async def shutdown(self) -> None:
        """Close the connection (unsettled deliveries go back to their queues); the state store
        belongs to whoever made it."""
        await self._outboxes.close_all()
        await self._io.run(self._close())
        self._io.stop()

    async def _ready(self) -> Any:
        """The I/O thread's channel, connecting first when there is none."""
        if self._channel is None:
            self._conn, self._channel = await open_channel(self.url, self.safe_url)
            self._conn.reconnect_callbacks.add(self._on_reconnect)
        return self._channel

    def _on_reconnect(self, *_: Any) -> None:
        """A new channel: what the old one held was requeued by RabbitMQ; set QoS again."""
        log.warning("reconnected to RabbitMQ at %s", self.safe_url)
        self._prefetch = 0
        self._buffer = [item for item in self._buffer if not item[3].stale]

    async def _close(self) -> None:
        for receipt in self._leased:
            if receipt.timer is not None:
                receipt.timer.cancel()
        conn = self._conn
        self._reset()
        if conn is not None:
            with contextlib.suppress(*LOST):
                await conn.close()

    async def _declare(self, queue: str) -> Any:
        """Declare a conveyor queue, its dead-letter queue, and note it in the state store."""
        found = self._queues.get(queue)
        if found is not None:
            return found
        async with self._topology:  # one declaration per queue, however many sends wait for it
            if queue not in self._queues:
                channel = await self._ready()
                dlx = await channel.declare_exchange(f"{self.prefix}.dead", "direct", durable=True)
                dead = await channel.declare_queue(f"{self.queue_name(queue)}.dead", durable=True)
                await dead.bind(dlx, routing_key=queue)
                arguments = {"x-max-priority": 9, "x-dead-letter-exchange": dlx.name,
                             "x-dead-letter-routing-key": queue}  # fmt: skip
                declared = await channel.declare_queue(
                    self.queue_name(queue), durable=True, arguments=arguments
                )
                await self.store.set(self._key("q", queue), b"1")
                self._queues[queue] = declared
            return self._queues[queue]

    async def _bucket(self, k: int) -> None:
        """Declare the fanout exchange of delay bucket `k` (its queue dead-letters to the
        default one)."""
        async with self._topology:
            if k not in self._buckets:
                channel = await self._ready()
                name = f"{self.prefix}.delay.{k}"
                exchange = await channel.declare_exchange(name, "fanout", durable=True)
                arguments = {"x-message-ttl": 2**k, "x-dead-letter-exchange": ""}
                held = await channel.declare_queue(name, durable=True, arguments=arguments)
                await held.bind(exchange)
                await self.store.set(self._key("d", str(k)), b"1")
                self._buckets.add(k)

    def _error(self, exc: BaseException) -> BrokerError:
        """`exc` as conveyor raises it, naming the URL (password hidden): a lost connection as
        `BrokerConnectionError`, another failure as `BrokerError`."""
        if isinstance(exc, BrokerError):
            return exc
        line = named_line(exc)
        if isinstance(exc, LOST) and not isinstance(exc, REFUSED):
            return BrokerConnectionError(f"cannot reach RabbitMQ at {self.safe_url}: {line}")
        return BrokerError(f"RabbitMQ at {self.safe_url} failed: {line}")

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish with confirms; a task id the (shared) index already holds is ignored.

        Runs on the caller's loop, on its own connection (`outbox.py`): no thread hop.
        """
        # Highest priority first: a consumer with free prefetch takes messages as they come,
        # so a batch reaches a worker by priority even when it arrives slower than the linger.
        messages = sorted(messages, key=lambda m: -int(m.priority))
        try:
            channel = await self._outboxes.here().channel()
        except Exception as exc:
            raise self._error(exc) from None
        now = time.time()
        records = [
            Record("scheduled" if m.eta else "queued", 0, 0.0, m.eta or 0.0, m.priority,
                   m.queue, new_tag())
            for m in messages
        ]  # fmt: skip
        fresh = list(zip(messages, records, strict=True))
        if self.store.shared:
            claims = await together([self._claim_id(m, r, now) for m, r in fresh])
            fresh = [pair for pair, claimed in zip(fresh, claims, strict=True) if claimed]
        else:  # no index of sends in a per-process store: it would only grow (see the docs)
            await together([self._undrop(m.task_id) for m in messages])
        try:
            await together([self._send(m, 0, r.tag, channel) for m, r in fresh])
        except Exception as exc:
            if self.store.shared:  # unsent: the id may be sent again
                keys = [self._key("m", m.task_id) for m, _ in fresh]
                await asyncio.gather(*map(self.store.delete, keys), return_exceptions=True)
            raise self._error(exc) from None

    async def _claim_id(self, message: Outgoing, record: Record, now: float) -> bool:
        """Create the index record; False when the id is held (a removed id is sent again)."""
        key = self._key("m", message.task_id)
        if await self.store.set_nx(key, record.encode(), record.ttl(now)):
            return True
        held = await self._record(message.task_id)
        if held is None or held.state != DROPPED:
            return False
        await self._put(message.task_id, record, now)
        return True

    async def _undrop(self, task_id: str) -> None:
        """Forget a local removal of a task id that is sent again."""
        held = await self._record(task_id)
        if held is not None and held.state == DROPPED:
            await self.store.delete(self._key("m", task_id))

    async def _send(self, m: Outgoing, n: int, tag: str, channel: Any = None) -> None:
        """Publish one message (`n` earlier deliveries, copy `tag`) to its queue, or to the delay
        bucket its `eta` needs, on `channel` (the I/O thread's when None); queues and buckets
        are declared there."""
        if m.queue not in self._queues:
            await self._io.run(self._declare(m.queue))
        headers: dict[str, Any] = {"x-n": n, "x-tag": tag}
        if m.eta:  # integer ms: pamqp sends a Python float as a 32-bit float
            headers["x-eta-ms"] = math.ceil(m.eta * 1000)
        k = delay_bucket(m.eta) if m.eta else None
        if k is not None and k not in self._buckets:
            await self._io.run(self._bucket(k))
        exchange = "" if k is None else f"{self.prefix}.delay.{k}"
        await publish(channel or self._channel, exchange, self.queue_name(m.queue), m.body,
                      m.task_id, headers, m.band)  # fmt: skip

    async def _settle(
        self, message: Delivered, *, requeue: bool = False, multiple: bool = False
    ) -> bool:
        """Ack `message` (with every unsettled one before it when `multiple`), or nack it back to
        its queue (`requeue`); False when the channel is gone (RabbitMQ requeued it). Its tag
        stays unsettled (`acks.py`) until the settle is written: a `multiple` ack sent meanwhile
        must not cover it."""
        try:
            await (message.nack() if requeue else message.ack(multiple=multiple))
        except LOST:
            self._unsettled.settled(message)
            return False
        self._unsettled.settled(message)
        return True

    async def _known_queues(self) -> list[str]:
        found = await self.store.scan(self._key("q", ""))
        return sorted(key.rpartition(":q:")[2] for key in found)
