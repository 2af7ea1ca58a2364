"""The connection side of `AmqpTransport`: options, topology, publishing with confirms.

`AmqpLink` owns the robust connection (in its `IoThread`), declares queues and exchanges on
first use (see `amqp.py` for the layout) and publishes; `AmqpTransport` adds consuming,
leases and settling on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from conveyor._urls import safe_url
from conveyor.errors import BrokerConnectionError, BrokerError, ConfigurationError
from conveyor.transports._amqp_records import (
    DROPPED,
    LOCAL_RECORD_TTL,
    RECORD_TTL,
    Record,
    delay_bucket,
    new_tag,
    split_url,
)
from conveyor.transports._delegated import DelegatedState, IoThread, reset_after_fork
from conveyor.transports.base import Outgoing

try:
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage
    from aio_pika.connection import make_url
    from aiormq.exceptions import AMQPError
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the RabbitMQ engine needs the amqp extra: pip install 'conveyor[amqp]'"
    ) from exc

__all__ = ["LOST", "AmqpLink", "int_header", "stale"]

log = logging.getLogger("conveyor.amqp")

#: Seconds the first connection may take before `BrokerConnectionError`.
CONNECT_TIMEOUT = 10.0

#: Errors of settling a delivery whose channel is gone: RabbitMQ has requeued it already.
LOST = (AMQPError, RuntimeError, ConnectionError)


class _NoTransportErrors(logging.Filter):
    """Drops aiormq's ERROR line for a failed TCP connect: conveyor raises it as one clear
    `BrokerConnectionError`, and aio-pika logs each failed reconnect itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


_FILTER = _NoTransportErrors()


def _quiet_aiormq() -> None:
    logging.getLogger("aiormq.connection").addFilter(_FILTER)  # a set: adding twice is once


def int_header(message: AbstractIncomingMessage, name: str) -> int:
    """An integer header this engine set, or 0."""
    value = (message.headers or {}).get(name)
    return int(value) if isinstance(value, int | float | str) else 0


def stale(message: AbstractIncomingMessage) -> bool:
    """True when the channel a message came on is closed (RabbitMQ requeued it)."""
    try:
        return bool(message.channel.is_closed)
    except LOST:  # aio-pika raises instead of answering for a closed channel
        return True


class AmqpLink(DelegatedState):
    """A RabbitMQ connection with the queues of one prefix and a state store (see
    `AmqpTransport` for the arguments)."""

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        prefix: str = "conveyor",
        state_url: str | None = None,
        lease_seconds: float = 30.0,
        linger_seconds: float = 0.02,
    ) -> None:
        self.url, query = split_url(url)
        self.safe_url = safe_url(self.url)
        self.prefix = query.get("prefix") or prefix
        try:
            self.lease_seconds = float(query.get("lease") or lease_seconds)
        except ValueError:
            self.lease_seconds = math.nan
        if not self.lease_seconds > 0:
            lease = query.get("lease") or lease_seconds
            raise ConfigurationError(
                f"the lease of {self.safe_url} must be a positive number of seconds, not {lease!r}"
            )
        self.linger_seconds = linger_seconds
        self.init_state(query.get("state") or state_url)
        self._io = IoThread("conveyor-amqp")
        self._conn: Any = None
        self._channel: Any = None
        self._queues: dict[str, Any] = {}
        self._consuming: dict[str, str] = {}  # queue -> consumer tag
        self._buckets: dict[int, Any] = {}  # delay bucket -> its exchange
        self._topology = asyncio.Lock()
        self._buffer: list[tuple[int, int, str, AbstractIncomingMessage]] = []
        self._seq = itertools.count()
        self._arrived: asyncio.Event | None = None
        self._prefetch = 0
        self._leased: set[Any] = set()  # `_Receipt`s of live leases
        self._chores: set[asyncio.Task[Any]] = set()
        reset_after_fork(self._forget)

    def _forget(self) -> list[Any]:
        """In a forked child: drop the parent's connection, consumers and leases, unused."""
        dropped = [self._conn, self._channel, self._queues, self._buckets, self._buffer]
        dropped += [self._leased, self._chores]
        self._conn = self._channel = self._arrived = None
        self._queues, self._consuming, self._buckets = {}, {}, {}
        self._buffer, self._leased, self._chores = [], set(), set()
        self._topology, self._prefetch = asyncio.Lock(), 0
        return dropped

    # -- names and connection ---------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"amqp:{self.prefix}:{kind}:{name}"

    def _ttl(self, record: Record, now: float) -> float:
        return record.ttl(now, RECORD_TTL if self.state_shared else LOCAL_RECORD_TTL)

    async def _put(self, task_id: str, record: Record, now: float) -> None:
        """Write the index record of a task id."""
        key = self._key("m", task_id)
        await self.state_store.kv_set(key, record.encode(), self._ttl(record, now))

    def queue_name(self, queue: str) -> str:
        """The RabbitMQ queue of a conveyor queue."""
        return f"{self.prefix}.{queue}"

    async def startup(self) -> None:
        """Connect (with publisher confirms) and start the state store; safe to call twice."""
        await self._io.run(self._connect())
        await self.start_state()

    async def shutdown(self) -> None:
        """Close the connection (unsettled deliveries go back to their queues)."""
        await self._io.run(self._close())
        await self.stop_state()
        self._io.stop()

    async def _connect(self) -> None:
        if self._channel is not None:
            return
        _quiet_aiormq()
        conn = aio_pika.RobustConnection(make_url(self.url), reconnect_interval=1)
        try:
            await conn.connect(timeout=CONNECT_TIMEOUT)
            self._channel = await conn.channel(publisher_confirms=True)
        except (TimeoutError, OSError, AMQPError) as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            raise BrokerConnectionError(
                f"cannot reach RabbitMQ at {self.safe_url}: {exc}"
            ) from None
        self._conn = conn
        conn.reconnect_callbacks.add(self._on_reconnect)
        self._arrived = asyncio.Event()
        self._topology = asyncio.Lock()
        self._prefetch = 0

    def _on_reconnect(self, *_: Any) -> None:
        """A new channel: what the old one held was requeued by RabbitMQ; set QoS again."""
        log.warning("reconnected to RabbitMQ at %s", self.safe_url)
        self._prefetch = 0
        self._buffer = [item for item in self._buffer if not stale(item[3])]

    async def _close(self) -> None:
        for receipt in self._leased:
            if receipt.timer is not None:
                receipt.timer.cancel()
        self._leased.clear()
        self._buffer.clear()
        conn, self._conn, self._channel = self._conn, None, None
        self._queues.clear()
        self._consuming.clear()
        self._buckets.clear()
        if conn is not None:
            with contextlib.suppress(*LOST):
                await conn.close()

    async def _ready(self) -> Any:
        await self._connect()
        return self._channel

    async def _declare(self, queue: str) -> Any:
        """Declare a conveyor queue, its dead-letter queue, and note it in the state store."""
        found = self._queues.get(queue)
        if found is not None:
            return found
        async with self._topology:  # one declaration per queue, however many sends wait for it
            found = self._queues.get(queue)
            if found is None:
                found = self._queues[queue] = await self._declare_now(queue)
            return found

    async def _declare_now(self, queue: str) -> Any:
        channel = await self._ready()
        dlx = await channel.declare_exchange(f"{self.prefix}.dead", "direct", durable=True)
        dead = await channel.declare_queue(f"{self.queue_name(queue)}.dead", durable=True)
        await dead.bind(dlx, routing_key=queue)
        arguments = {
            "x-max-priority": 9,
            "x-dead-letter-exchange": f"{self.prefix}.dead",
            "x-dead-letter-routing-key": queue,
        }
        declared = await channel.declare_queue(
            self.queue_name(queue), durable=True, arguments=arguments
        )
        await self.state_store.kv_set(self._key("q", queue), b"1", None)
        return declared

    async def _bucket(self, k: int) -> Any:
        """The fanout exchange of delay bucket `k` (its queue dead-letters to the default one)."""
        found = self._buckets.get(k)
        if found is not None:
            return found
        async with self._topology:
            if k not in self._buckets:
                channel = await self._ready()
                name = f"{self.prefix}.delay.{k}"
                exchange = await channel.declare_exchange(name, "fanout", durable=True)
                arguments = {"x-message-ttl": 2**k, "x-dead-letter-exchange": ""}
                held = await channel.declare_queue(name, durable=True, arguments=arguments)
                await held.bind(exchange)
                await self.state_store.kv_set(self._key("d", str(k)), b"1", None)
                self._buckets[k] = exchange
            return self._buckets[k]

    def _error(self, exc: BaseException) -> BrokerError:
        if isinstance(exc, BrokerError):
            return exc
        return BrokerError(f"RabbitMQ at {self.safe_url} failed: {type(exc).__name__}: {exc}")

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish with confirms; a task id the (shared) index already holds is ignored."""
        await self._io.run(self._publish(messages))

    async def _publish(self, messages: Sequence[Outgoing]) -> None:
        # Highest priority first: a consumer with free prefetch takes messages as they come,
        # so a batch reaches a worker by priority even when it arrives slower than the linger.
        messages = sorted(messages, key=lambda m: -int(m.priority))
        now = time.time()
        records = [
            Record("scheduled" if m.eta else "queued", 0, 0.0, m.eta or 0.0, m.priority,
                   m.queue, new_tag())
            for m in messages
        ]  # fmt: skip
        pairs = list(zip(messages, records, strict=True))
        fresh = pairs
        if self.state_shared:
            claims = await asyncio.gather(*(self._claim_id(m, r, now) for m, r in pairs))
            fresh = [pair for pair, claimed in zip(pairs, claims, strict=True) if claimed]
        else:  # no index of sends in a per-process store: it would only grow (see the docs)
            await asyncio.gather(*(self._undrop(m.task_id) for m in messages))
        try:
            sends = [self._send(m.queue, m.task_id, m.body, m.priority, m.eta, 0, r.tag)
                     for m, r in fresh]  # fmt: skip
            await asyncio.gather(*sends)
        except Exception as exc:
            if self.state_shared:  # unsent: the id may be sent again
                keys = [self._key("m", m.task_id) for m, _ in fresh]
                await asyncio.gather(
                    *(self.state_store.kv_delete(key) for key in keys), return_exceptions=True
                )
            raise self._error(exc) from None

    async def _claim_id(self, message: Outgoing, record: Record, now: float) -> bool:
        """Create the index record; False when the id is held (a cancelled id is sent again)."""
        key = self._key("m", message.task_id)
        if await self.state_store.set_nx(key, record.encode(), self._ttl(record, now)):
            return True
        held = Record.decode(await self.state_store.kv_get(key))
        if held is None or held.state != DROPPED:
            return False
        await self._put(message.task_id, record, now)
        return True

    async def _undrop(self, task_id: str) -> None:
        """Forget a local cancel of a task id that is sent again."""
        held = Record.decode(await self.state_store.kv_get(self._key("m", task_id)))
        if held is not None and held.state == DROPPED:
            await self.state_store.kv_delete(self._key("m", task_id))

    async def _send(
        self,
        queue: str,
        task_id: str,
        body: bytes,
        priority: int,
        eta: float | None,
        n: int,
        tag: str,
    ) -> None:
        """Publish one message to its queue, or to the delay bucket its `eta` needs."""
        await self._declare(queue)
        headers: dict[str, Any] = {"x-n": n, "x-tag": tag}
        if eta:  # integer ms: pamqp sends a Python float as a 32-bit float
            headers["x-eta-ms"] = math.ceil(eta * 1000)
        message = aio_pika.Message(
            body,
            message_id=task_id,
            priority=min(max(int(priority), 0), 9),
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        k = delay_bucket(eta) if eta else None
        if k is None:
            await self._channel.default_exchange.publish(message, self.queue_name(queue))
        else:
            exchange = await self._bucket(k)
            await exchange.publish(message, self.queue_name(queue))

    @staticmethod
    async def _settle(action: Any) -> bool:
        """Ack or nack; False when the channel is gone (RabbitMQ requeued the message)."""
        try:
            await action()
        except LOST:
            return False
        return True

    async def _known_queues(self) -> list[str]:
        found = await self.state_store.kv_scan(self._key("q", ""))
        return sorted(key.rpartition(":q:")[2] for key in found)
