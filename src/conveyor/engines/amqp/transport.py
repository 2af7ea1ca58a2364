"""The RabbitMQ transport: durable priority queues, publisher confirms, manual acks.

Layout for a prefix `P` (see `docs/engines/amqp.md`): each conveyor queue `q` is a durable
classic queue `P.q` (`x-max-priority` 9) fed through the default exchange; `P.dead` is a direct
exchange routing dead letters to `P.q.dead`; delays wait in `P.delay.<k>` queues with a fixed TTL
of 2**k ms that dead-letter back to the work queue. A message still not due when it comes back
(its `x-eta-ms` header) waits again in the largest bucket that fits, so a delay takes at most ~32
hops, never delivers early, and a fixed TTL per queue means no head-of-line blocking.

A worker consumes with a prefetch of the capacity it asks for (`receive(max_count)` plus what it
runs) and keeps the deliveries in a buffer sorted by priority. RabbitMQ has no lease while the
consumer lives, so the transport keeps one: a delivery not extended within `lease_seconds` is
nacked back to the queue and any later settle of it does nothing. Where messages are and which
ids are held live in an index in the state store (`records.py`). The connection lives in a
thread of its own (`IoThread`), so callers may use any event loop; publishes go out on a
connection of the caller's loop (`outbox.py`).

A message another client published into a work queue without a `message_id`, or with an `x-n`
or `x-eta-ms` header that is not an integer, is handed out as a delivery with its `problem`
(never indexed); its dead letter gets a stand-in id of its own, so two of them stay apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, NoReturn

from conveyor.engines.amqp.acks import AmqpAcks, Receipt
from conveyor.engines.amqp.delivered import Delivered, cancel, consume, consuming
from conveyor.engines.amqp.link import on_io
from conveyor.engines.amqp.outbox import publish
from conveyor.engines.amqp.records import DROPPED, Record, new_tag
from conveyor.engines.base import Delivery, Outgoing

__all__ = ["AmqpTransport"]

#: How long a receive that has just started consumers, or raised a prefetch its deliveries had
#: filled, waits for the backlog RabbitMQ then delivers one message at a time, before handing
#: out the first of them by priority. A prefetch with room to spare had no backlog behind it
#: (RabbitMQ pushes while there is room), so raising it costs an idle worker nothing.
_BACKLOG_SECONDS = 0.02

#: How long a receive's lower count must last before the prefetch is lowered to it. Each change
#: is a round trip, and a worker's count dips on a third of its receives in a drain: it asks as
#: soon as the first task of an acked batch frees its slot, before the rest free theirs.
_SHRINK_SECONDS = 1.0

log = logging.getLogger("conveyor.amqp")


def _read(message: Delivered) -> tuple[int, float, str | None]:
    """A delivered message's earlier deliveries, due time, and why it cannot run (or None): its
    `x-n` and `x-eta-ms` headers are integers this engine set (0 when absent)."""
    headers, found = message.headers, list[int]()
    for name in ("x-n", "x-eta-ms"):
        value = 0 if headers.get(name) is None else headers[name]
        if isinstance(value, bool) or not isinstance(value, int):
            return 0, 0.0, f"its {name} header is {value!r}, not an integer"
        found.append(value)
    n, eta_ms = found
    if not message.message_id:
        return n, 0.0, "it has no message_id"
    return n, eta_ms / 1000, None


class AmqpTransport(AmqpAcks):
    """Messages on RabbitMQ; their index in a state store of another engine.

    Args:
        url: `amqp://user:password@host:5672/vhost` or `amqps://...`; query options `prefix`
            and `lease` override the arguments below.
        store: where the index lives (shared, or this process's memory: logged as a WARNING).
        prefix: prefix of every queue and exchange name, so several apps share a vhost.
        lease_seconds: how long a delivery stays leased without `extend`
            (`DEFAULT_LEASE_SECONDS` when None).
        linger_seconds: after a first message arrives at an idle receive, how long to wait for
            the rest of its burst, so a burst is handed out by priority (0: start at once).
    """

    # -- receiving ------------------------------------------------------------------------------

    @on_io
    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Lease up to `max_count` messages, waiting up to `timeout` seconds for one.

        An empty `queues` means every queue noted in the state store.
        """
        if max_count <= 0:
            return []
        queues = list(dict.fromkeys(queues))
        await self._ready()
        deadline = time.monotonic() + timeout
        # More capacity, or new consumers: RabbitMQ pushes what it holds one message at a time.
        backlog = await self._set_prefetch(len(self._leased) + max_count)
        lingered = True  # lingering is for a receive that had to wait
        while True:
            names = queues or await self._known_queues()
            if await self._consume_only(names):
                lingered = False  # new consumers: their backlogs arrive one by one
                backlog = True
            self._arrived.clear()
            waiting = self._waiting(names)
            pause = _BACKLOG_SECONDS if backlog else self.linger_seconds
            if 0 < waiting < max_count and not lingered and pause > 0:
                lingered = True
                await asyncio.sleep(pause)
                continue
            got = await self._hand_out(self._take(names, max_count))
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5) if not queues else left)
            lingered = False

    async def _set_prefetch(self, count: int) -> bool:
        """Set the channel's prefetch; True when it grew from full, so RabbitMQ may hold a
        backlog for this channel. A lower count is set once it has lasted `_SHRINK_SECONDS`.
        (Growing back after a dip is no backlog when the deliveries had not filled the old
        prefetch: waiting for one made 1-2 % of idle starts 20 ms late.)"""
        now = time.monotonic()
        if count >= self._prefetch:
            self._lower_since = now
            if count == self._prefetch:
                return False
        elif now - self._lower_since < _SHRINK_SECONDS:
            return False
        full = len(self._leased) + len(self._buffer) >= self._prefetch
        await self._channel.set_qos(prefetch_count=count, global_=True)
        grew, self._prefetch = count > self._prefetch, count
        return grew and full

    async def _consume_only(self, names: Sequence[str]) -> bool:
        """Consume exactly these queues: a consumer of another queue would hold prefetch slots
        (the limit is per channel) with messages nobody asks for, so it is cancelled and its
        buffered messages go back to their queue. A consumer that died (its channel was closed,
        or RabbitMQ cancelled it: its queue was deleted) is started again once the channel is
        open. True when a consumer was started."""
        for queue, (channel, tag) in list(self._consuming.items()):
            if queue in names and consuming(channel, tag):
                continue
            del self._consuming[queue]
            if queue in names:  # died; a reopened channel has declared its queues again
                if not channel.is_closed:
                    self._queues.pop(queue, None)
                continue
            await cancel(channel, tag)
            for item in [item for item in self._buffer if item[2] == queue]:
                self._buffer.remove(item)
                await self._settle(item[3], requeue=True)
        started = False
        for queue in [q for q in names if q not in self._consuming]:
            if self._channel.is_closed:  # reconnecting: a later receive starts it
                break
            await self._declare(queue)
            channel = await self._channel.get_underlay_channel()
            self._consuming[queue] = (channel, "")  # deliveries may come before consume-ok
            try:
                on_message = partial(self._on_message, queue)
                tag = await consume(channel, self.queue_name(queue), on_message)
            except BaseException:
                del self._consuming[queue]  # the next receive tries again
                raise
            self._consuming[queue] = (channel, tag)
            started = True
        return started

    async def _on_message(self, queue: str, message: Delivered) -> None:
        self._unsettled.noted(message)
        if queue not in self._consuming:  # arrived after its consumer was cancelled
            await self._settle(message, requeue=True)
            return
        self._buffer.append((-message.priority, next(self._seq), queue, message))
        self._arrived.set()

    def _waiting(self, names: Sequence[str]) -> int:
        self._buffer = [item for item in self._buffer if not item[3].stale]
        wanted = set(names)
        return sum(1 for item in self._buffer if item[2] in wanted)

    def _take(self, names: Sequence[str], count: int) -> list[tuple[str, Delivered]]:
        wanted = set(names)
        mine = sorted(item for item in self._buffer if item[2] in wanted)[:count]
        taken = {id(item) for item in mine}
        self._buffer = [item for item in self._buffer if id(item) not in taken]
        return [(queue, message) for _, _, queue, message in mine]

    async def _hand_out(self, taken: list[tuple[str, Delivered]]) -> list[Delivery]:
        """Lease the taken messages. One neither leased nor settled, because a call failed or
        the receive was cancelled, is nacked back to its queue: none is left held untimed."""
        got: list[Delivery] = []
        try:
            outcomes = await asyncio.gather(
                *(self._lease(queue, message) for queue, message in taken), return_exceptions=True
            )
            got = [d for d in outcomes if isinstance(d, Delivery)]
        finally:
            await self._put_back([message for _, message in taken], got)
        errors = [e for e in outcomes if isinstance(e, BaseException)]
        if errors and not got:
            raise self._error(errors[0])
        for error in errors:
            log.warning("a delivery went back to its queue: %s", self._error(error))
        return got

    async def _put_back(self, messages: list[Delivered], handed: list[Delivery]) -> None:
        kept = {id(delivery.receipt.message) for delivery in handed}
        for message in messages:
            if id(message) in kept or message.processed:
                continue
            for receipt in [r for r in self._leased if r.message is message]:
                self._unlease(receipt)  # leased, but the receive was cancelled before returning
            await self._settle(message, requeue=True)

    async def _lease(self, queue: str, message: Delivered) -> Delivery | None:
        """Lease one delivered message, or drop it (removed, a stale copy) or delay it again
        (not due). A malformed one is leased with its problem, the index untouched."""
        sent_n, eta, problem = _read(message)
        task_id, priority = message.message_id, message.priority
        tag = str(message.headers.get("x-tag") or "")
        if problem is not None:
            return self._hand(queue, message, Record("running", 1, priority=priority), problem)
        record = await self._record(task_id)
        if record is not None and not record.accepts(tag):
            await self._settle(message)  # another copy is the one that counts
            return None
        if record is not None and record.state == DROPPED:
            if await self._settle(message):
                await self.store.delete(self._key("m", task_id))
            return None
        if eta > time.time():
            await self._send(Outgoing(task_id, queue, message.body, priority, eta), sent_n, tag)
            await self._settle(message)
            return None
        # without a record (an index of another process) count from the header
        n = record.deliveries + 1 if record else sent_n + 1 + bool(message.redelivered)
        now = time.time()
        running = Record("running", n, now + self.lease_seconds, 0.0, priority, queue, tag)
        await self._put(task_id, running, now)
        return self._hand(queue, message, running, None)

    def _hand(
        self, queue: str, message: Delivered, record: Record, problem: str | None
    ) -> Delivery:
        receipt = Receipt(message, record.priority, record.tag)
        self._leased.add(receipt)
        self._arm(receipt)
        n, body = record.deliveries, message.body
        return Delivery(message.message_id, queue, body, n, receipt, problem)

    def _arm(self, receipt: Receipt) -> None:
        if receipt.timer is not None:
            receipt.timer.cancel()
        loop = asyncio.get_running_loop()
        receipt.timer = loop.call_later(self.lease_seconds, self._expire, receipt)

    def _expire(self, receipt: Receipt) -> None:
        """The lease ran out: give the message back to the queue, to anyone."""
        if receipt not in self._leased:
            return
        self._unlease(receipt)
        chore = asyncio.get_running_loop().create_task(self._settle(receipt.message, requeue=True))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    # -- settling -------------------------------------------------------------------------------

    async def _give_back(self, receipt: Receipt, exc: BaseException) -> NoReturn:
        """A settle failed: nack the delivery back to its place (it runs again) and raise."""
        await self._settle(receipt.message, requeue=True)
        if isinstance(exc, Exception):
            raise self._error(exc) from None
        raise exc

    @on_io
    async def release(
        self, delivery: Delivery, *, body: bytes | None = None, delay: float = 0.0
    ) -> None:
        """Put a held delivery back: nacked to its place, or published again (new body, delay)."""
        receipt = self._claim(delivery)
        if receipt is None:
            return
        now = time.time()
        eta = now + delay if delay > 0 else 0.0
        record = Record("scheduled" if eta else "queued", delivery.deliveries, 0.0, eta,
                        receipt.priority, delivery.queue, receipt.tag)  # fmt: skip
        if delivery.problem is None and (body is not None or eta):
            await self._republish(delivery, receipt, record, body)
            return
        try:  # nacked to its place: the same copy counts (a malformed one, as it came)
            if delivery.problem is None:
                await self._put(delivery.task_id, record, now)
        finally:
            await self._settle(receipt.message, requeue=True)

    async def _republish(
        self, delivery: Delivery, receipt: Receipt, record: Record, body: bytes | None
    ) -> None:
        """Publish a new copy, then ack the original. Until one of them is delivered the record
        names both, so a failure or a crash at any step may run the task twice, never lose it."""
        tag, original = new_tag(), receipt.message
        try:
            both = record.with_(tag=f"{tag},{receipt.tag}")
            await self._put(delivery.task_id, both, time.time())
            body = original.body if body is None else body
            copy = Outgoing(delivery.task_id, delivery.queue, body, receipt.priority, record.eta)
            await self._send(copy, delivery.deliveries, tag)
        except BaseException as exc:  # the original goes back to its place, and counts
            await self._give_back(receipt, exc)
        if not await self._settle(original):  # RabbitMQ requeued it: only the new one counts
            with contextlib.suppress(Exception):
                await self._put(delivery.task_id, record.with_(tag=tag), time.time())

    @on_io
    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases this transport still holds."""
        now = time.time()
        writes = []
        for delivery in deliveries:
            receipt = delivery.receipt
            if not isinstance(receipt, Receipt) or receipt not in self._leased:
                continue
            if receipt.message.stale:  # RabbitMQ requeued it when the channel closed
                self._unlease(receipt)
                continue
            self._arm(receipt)
            if delivery.problem is None:
                record = Record("running", delivery.deliveries, now + self.lease_seconds, 0.0,
                                receipt.priority, delivery.queue, receipt.tag)  # fmt: skip
                writes.append(self._put(delivery.task_id, record, now))
        await asyncio.gather(*writes)

    @on_io
    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish a held delivery to `P.dead` (-> `P.q.dead`) with the reason, then ack it."""
        receipt = self._claim(delivery)
        if receipt is None:
            return
        headers: dict[str, Any] = {
            "x-reason": reason,
            "x-failed-at-ms": int(time.time() * 1000),
            "x-queue": delivery.queue,
            "x-priority": receipt.priority,
        }
        message_id = delivery.task_id or f"<no id {new_tag()}>"  # id-less letters kept apart
        try:
            await self._declare(delivery.queue)
            dead = f"{self.prefix}.dead"
            await publish(self._channel, dead, delivery.queue, receipt.message.body, message_id,
                          headers)  # fmt: skip
        except BaseException as exc:  # not kept aside: back to its queue, to run again
            await self._give_back(receipt, exc)
        if await self._settle(receipt.message):
            await self._unindex(delivery)
