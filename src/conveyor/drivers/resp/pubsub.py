"""Pub/sub over one RESP2 socket: channels and their callbacks, resubscribed after a reconnect.

Part of the `conveyor.drivers.resp` driver, which knows nothing of conveyor. A `Subscriber`
belongs to the one event loop it was made in; it opens its socket on the first `watch`,
confirms each (un)subscription in order, calls every callback of a channel with a message's
data, and after a lost connection reconnects with backoff (0.2 s doubling up to 5 s) and
subscribes to every watched channel again while any is watched. Messages published while it
was disconnected are not heard: a user of it must not depend on pub/sub alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import cast

import hiredis

from conveyor.drivers.resp.pipeline import auth_command, open_socket, pack_command, parse_url

__all__ = ["Subscriber", "Watchers"]

log = logging.getLogger("conveyor.redis")


class Watchers(dict[bytes, set[Callable[[bytes], None]]]):
    """Pub/sub callbacks by channel (kept by this driver's `Subscriber` and by redis-py users)."""

    def add(self, channel: bytes, callback: Callable[[bytes], None]) -> bool:
        """Add `callback` to `channel`; True when the channel is new (to subscribe to)."""
        new = channel not in self
        self.setdefault(channel, set()).add(callback)
        return new

    def remove(self, channel: bytes, callback: Callable[[bytes], None]) -> bool:
        """Remove `callback`; True when it was the channel's last (to unsubscribe from)."""
        callbacks = self.get(channel, set())
        callbacks.discard(callback)
        if callbacks or channel not in self:
            return False
        del self[channel]
        return True

    def deliver(self, channel: bytes, data: bytes) -> None:
        """Call every callback of `channel` with a message's data."""
        for callback in list(self.get(channel, ())):
            callback(data)


class Subscription(asyncio.Protocol):
    """A pub/sub socket: confirms (un)subscriptions in order and passes messages on."""

    def __init__(self, owner: Subscriber) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.confirms: collections.deque[asyncio.Future[None]] = collections.deque()
        self.gone: asyncio.Future[None] = owner.loop.create_future()  # set when closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, list) and reply[:1] == [b"message"]:
                self.owner.watchers.deliver(reply[1], reply[2])
            elif self.confirms:  # a subscribe/unsubscribe/AUTH confirmation, or an error
                future = self.confirms.popleft()
                if future.done():
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ConnectionError(f"Redis refused: {reply}"))
                else:
                    future.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.gone.done():
            self.gone.set_result(None)
        while self.confirms:
            future = self.confirms.popleft()
            if not future.done():
                future.set_exception(ConnectionError("pub/sub connection to Redis lost"))
        self.owner.lost()

    def command(self, *words: bytes | str) -> asyncio.Future[None]:
        if self.transport is None:
            raise ConnectionError("pub/sub connection to Redis is closed")
        # (UN)SUBSCRIBE answers once per channel: the last answer confirms the command.
        answers = len(words) - 1 if words[0] in ("SUBSCRIBE", "UNSUBSCRIBE") else 1
        futures = [self.owner.loop.create_future() for _ in range(max(answers, 1))]
        self.transport.write(pack_command(words))
        self.confirms.extend(futures)
        return futures[-1]


class Subscriber:
    """Channels and their callbacks over one pub/sub socket, resubscribed after a reconnect."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.loop = loop
        self.watchers = Watchers()
        self.socket: Subscription | None = None
        self.reconnecting: asyncio.Task[None] | None = None
        self.connecting = asyncio.Lock()
        self.closed = False

    async def _connect(self) -> Subscription:
        async with self.connecting:  # two first watchers must not open two sockets
            if self.socket is not None and self.socket.transport is not None:
                return self.socket
            return await self._open()

    async def _open(self) -> Subscription:
        socket = await open_socket(self.url, lambda: Subscription(self))
        try:
            auth = auth_command(parse_url(self.url))
            if auth:
                await socket.command(*auth)
            if self.watchers:
                await socket.command("SUBSCRIBE", *self.watchers)
        except BaseException:
            if socket.transport is not None:
                socket.transport.abort()
            raise
        self.socket = socket
        return socket

    async def watch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        new = self.watchers.add(channel, callback)
        try:
            socket = await self._connect()
            if new:
                await socket.command("SUBSCRIBE", channel)
        except BaseException:
            self.watchers.remove(channel, callback)
            raise

    async def unwatch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        socket = self.socket
        last = self.watchers.remove(channel, callback)
        if last and socket is not None and socket.transport is not None:
            with contextlib.suppress(ConnectionError):
                await socket.command("UNSUBSCRIBE", channel)

    def lost(self) -> None:
        """The socket dropped: reconnect with backoff while anything is watched."""
        self.socket = None
        if self.closed or not self.watchers:
            return
        if self.reconnecting is None or self.reconnecting.done():
            self.reconnecting = self.loop.create_task(self._reconnect(), name="conveyor-pubsub")

    async def _reconnect(self) -> None:
        failures = 0
        while not self.closed and self.watchers:
            try:
                await self._connect()
                return
            except (OSError, TimeoutError):
                failures += 1
                log.debug("pub/sub reconnect failed (%d)", failures, exc_info=True)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def close(self) -> None:
        self.closed = True
        if self.reconnecting is not None:
            self.reconnecting.cancel()
        if self.socket is not None:
            if self.socket.transport is not None:
                self.socket.transport.close()
            await self.socket.gone
