"""Claiming and acking deliveries of the RabbitMQ transport, many at a time.

A worker's tasks end one by one, each awaiting its ack. `AmqpAcks.ack` gathers the acks the
tasks of one event loop make together (`engines.loops.Batcher`) and sends them to the I/O thread
in one hop; there the deliveries RabbitMQ sent in a row, with nothing else of the channel
unsettled between them, are acked by one basic.ack with `multiple` (`unsettled.py` says which),
the others one by one, and their index records are deleted in one pipeline. Each ack returns
once its batch is written, so a task's result is still stored before its ack is sent.

Invariants: a delivery is claimed (its lease taken away) once, by whichever settle comes first;
a stale one (its channel closed: RabbitMQ requeued it) is never acked; one batch is planned and
written at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from conveyor.engines.amqp.admin import AmqpAdmin
from conveyor.engines.amqp.delivered import Delivered
from conveyor.engines.amqp.link import on_io
from conveyor.engines.base import Delivery
from conveyor.engines.kit import typed_receipt
from conveyor.engines.loops import Batcher, PerLoop, together

__all__ = ["AmqpAcks", "Receipt"]


async def _nothing(_: object) -> None:
    """Closes a loop's ack batcher: nothing to close (what is pending ends with its loop)."""


@dataclass(eq=False, slots=True)
class Receipt:
    """A leased delivery: its message and its lease timer. It may still be settled while it is
    in its transport's lease set (`_leased`)."""

    message: Delivered
    priority: int
    tag: str
    timer: asyncio.TimerHandle | None = None


class AmqpAcks(AmqpAdmin):
    """Claiming and acking the deliveries of `AmqpTransport` (see there for the arguments)."""

    @cached_property
    def _ack_batches(self) -> PerLoop[Batcher[Delivery]]:
        return PerLoop(lambda _loop: Batcher(self._ack_now), _nothing)

    def _unlease(self, receipt: Receipt) -> None:
        self._leased.discard(receipt)
        if receipt.timer is not None:
            receipt.timer.cancel()

    def _claim(self, delivery: Delivery) -> Receipt | None:
        """The receipt of a delivery this transport still holds, taken out of the lease set."""
        receipt = typed_receipt(delivery, Receipt, "an AmqpTransport")
        if receipt not in self._leased:
            return None
        self._unlease(receipt)
        return None if receipt.message.stale else receipt

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Ack deliveries this transport still holds and drop them from the index.

        The acks of many tasks of one event loop go to the I/O thread together, one hop per
        batch (`engines.loops.Batcher`): the hop and its wake-ups cost more than an ack.
        """
        batcher = self._ack_batches.here()
        await together([batcher.submit(delivery) for delivery in deliveries])

    @on_io
    async def _ack_now(self, deliveries: Sequence[Delivery]) -> None:
        """Ack what is still held: one `multiple` ack for the deliveries RabbitMQ sent in a row
        with nothing else unsettled between them (`unsettled.py`), the others one by one; then
        drop them from the index."""
        async with self._acking:  # a `multiple` ack is written before the next batch is planned
            held = [(d, r) for d in deliveries if (r := self._claim(d)) is not None]
            top, covered, rest = self._unsettled.split([r.message for _, r in held])
            acked: set[int] = set()
            if top and await self._settle(top[0], multiple=True):
                acked = {id(m) for m in covered}
            for message in rest:
                if await self._settle(message):
                    acked.add(id(message))
        unindexed = [self._unindex(d) for d, r in held if id(r.message) in acked]
        for failed in await asyncio.gather(*unindexed, return_exceptions=True):
            if isinstance(failed, BaseException):
                raise failed

    async def _unindex(self, delivery: Delivery) -> None:
        """Forget the record of a settled delivery (a malformed one never had one)."""
        if delivery.problem is None:
            await self.store.delete(self._key("m", delivery.task_id))
