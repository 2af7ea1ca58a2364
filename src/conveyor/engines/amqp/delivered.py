"""A message RabbitMQ delivered to one of the transport's consumers, as the transport reads it.

The transport consumes through aiormq, the driver under aio-pika's channel. aio-pika would wrap
each delivery in an `IncomingMessage`, whose constructor decodes every property (44 us a
message, measured) and whose consumer runs the callback in a task of its own: a fifth of the
I/O thread's time in a drain. The transport reads five properties and settles by delivery tag,
so it keeps this instead (see `bench/NOTES.md`, session 14).

Invariants: a message is settled at most once (a second settle sends nothing, so RabbitMQ never
sees an unknown delivery tag and closes the channel); a message whose channel is closed is stale:
RabbitMQ requeued it, and nothing can settle it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from aiormq.abc import DeliveredMessage

__all__ = ["Delivered", "cancel", "consume", "consuming"]


class Delivered:
    """One delivery: its id, priority, headers, body and tag, and the channel it came on."""

    __slots__ = ("body", "channel", "delivery_tag", "headers", "message_id", "priority",
                 "processed", "redelivered")  # fmt: skip

    def __init__(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        self.body: bytes = message.body
        self.channel: Any = message.channel
        self.delivery_tag: int = message.delivery_tag or 0
        self.headers: dict[str, Any] = properties.headers or {}
        self.message_id: str = properties.message_id or ""
        self.priority: int = properties.priority or 0
        self.redelivered = bool(message.redelivered)
        self.processed = False

    @property
    def stale(self) -> bool:
        """True when the channel it came on is closed (RabbitMQ requeued it)."""
        return bool(self.channel.is_closed)

    async def ack(self, *, multiple: bool = False) -> None:
        """Ack it (with every unsettled delivery before it on its channel when `multiple`)."""
        if not self.processed:
            self.processed = True
            await self.channel.basic_ack(self.delivery_tag, multiple=multiple)

    async def nack(self) -> None:
        """Give it back to its queue, to be delivered again."""
        if not self.processed:
            self.processed = True
            await self.channel.basic_nack(self.delivery_tag, requeue=True)


async def consume(
    channel: Any, queue: str, on_message: Callable[[Delivered], Coroutine[Any, Any, None]]
) -> str:
    """Start a consumer of the RabbitMQ queue `queue` on the aiormq `channel`; its tag."""

    async def deliver(message: DeliveredMessage) -> None:
        await on_message(Delivered(message))

    started = await channel.basic_consume(queue, deliver)
    return str(started.consumer_tag)


async def cancel(channel: Any, tag: str) -> None:
    """Stop the consumer `tag` of the aiormq `channel` (nothing to do once its channel closed)."""
    if not channel.is_closed:
        await channel.basic_cancel(tag)


def consuming(channel: Any, tag: str) -> bool:
    """True while the consumer `tag` of the aiormq `channel` lives: neither its channel was
    closed (a reconnect makes a new one) nor RabbitMQ cancelled it (its queue was deleted)."""
    return not channel.is_closed and tag in channel.consumers
