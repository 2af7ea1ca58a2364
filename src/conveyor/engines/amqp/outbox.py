"""A RabbitMQ connection with a confirming channel: the I/O thread's, and one per event loop
that publishes (`Outbox`, kept in an `engines.loops.PerLoop` by `AmqpLink`).

Why a connection per publishing loop: an awaited `kiq` is a state-store write and a confirmed
publish; sending them through the I/O thread cost two thread hops and their wake-ups, about a
fifth of the CPU of each `kiq`. Consumers, settles and topology stay on the I/O thread.

Messages go out through aiormq, the driver under aio-pika's channel (`publish`): aio-pika's
`Exchange.publish` builds a `Message` and waits until the frames are written before it waits for
the confirm, 60-80 us of CPU more a publish (`bench/NOTES.md`, session 15).

Invariants: the first connection fails fast with one `BrokerConnectionError` naming the URL
(password hidden), and concurrent callers share that one attempt; once connected, aio-pika's
robust connection reconnects every second and restores the channel by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
from aio_pika.connection import make_url
from aiormq import exceptions as amqp
from aiormq import spec

from conveyor.errors import BrokerConnectionError

__all__ = ["CONNECT_TIMEOUT", "LOST", "REFUSED", "Outbox", "open_channel", "publish"]

#: Seconds the first connection may take before `BrokerConnectionError`.
CONNECT_TIMEOUT = 10.0

#: Errors of a channel that is gone (settling on it: RabbitMQ has requeued the message).
LOST = (amqp.AMQPError, RuntimeError, ConnectionError)
#: What a connected RabbitMQ refuses (access, a queue declared otherwise, a returned publish):
#: among `LOST`'s types, yet no lost connection.
REFUSED = (amqp.ChannelAccessRefused, amqp.ChannelLockedResource, amqp.ChannelNotFoundEntity,
           amqp.ChannelPreconditionFailed, amqp.DeliveryError)  # fmt: skip


def _no_transport_errors(record: logging.LogRecord) -> bool:
    """Drops aiormq's ERROR line for a failed TCP connect: conveyor raises it as one clear
    `BrokerConnectionError`, and aio-pika logs each failed reconnect itself."""
    return not str(record.msg).startswith("error when creating transport")


async def open_channel(url: str, safe_url: str) -> tuple[Any, Any]:
    """A robust connection to `url` and a channel on it with publisher confirms.

    Raises:
        BrokerConnectionError: RabbitMQ cannot be reached within `CONNECT_TIMEOUT`.
    """
    logging.getLogger("aiormq.connection").addFilter(_no_transport_errors)  # added once
    conn = aio_pika.RobustConnection(make_url(url), reconnect_interval=1)
    try:
        await conn.connect(timeout=CONNECT_TIMEOUT)
        channel = await conn.channel(publisher_confirms=True)
    except BaseException as exc:  # cancelled too: no half-open connection is left behind
        with contextlib.suppress(Exception):
            await conn.close()
        if isinstance(exc, TimeoutError | OSError | amqp.AMQPError):
            raise BrokerConnectionError(f"cannot reach RabbitMQ at {safe_url}: {exc}") from None
        raise
    return conn, channel


class Outbox:
    """The publishing connection of one event loop, opened on first use."""

    def __init__(self, url: str, safe_url: str) -> None:
        self._url, self._safe_url = url, safe_url
        self._opening: asyncio.Future[tuple[Any, Any]] | None = None

    async def channel(self) -> Any:
        """The confirming channel (concurrent callers share one connection attempt)."""
        opening = self._opening
        if opening is None or (opening.done() and opening.exception() is not None):
            opening = self._opening = asyncio.ensure_future(open_channel(self._url, self._safe_url))
        return (await asyncio.shield(opening))[1]

    async def close(self) -> None:
        """Close the connection (publishes in flight fail)."""
        opening, self._opening = self._opening, None
        if opening is None:
            return
        if not opening.done():  # the attempt closes what it opened when cancelled
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await opening
            return
        if not opening.cancelled() and opening.exception() is None:
            with contextlib.suppress(*LOST):
                await opening.result()[0].close()


async def publish(
    channel: Any, exchange: str, routing_key: str, body: bytes, message_id: str,
    headers: dict[str, Any], priority: int = 0,
) -> None:  # fmt: skip
    """Publish a persistent message on aio-pika's `channel` and wait for RabbitMQ's confirm.

    Raises:
        aiormq.exceptions.ChannelInvalidStateError: the channel is closed (RabbitMQ is away: a
            robust channel's underlay would wait for the reconnect).
        aiormq.exceptions.DeliveryError: RabbitMQ refused the message (a nack, or unroutable).
    """
    if channel.is_closed:
        raise amqp.ChannelInvalidStateError(f"{channel!r} closed")
    properties = spec.Basic.Properties(
        message_id=message_id, headers=headers, priority=priority, delivery_mode=2
    )
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        body, exchange=exchange, routing_key=routing_key, properties=properties, wait=False
    )
