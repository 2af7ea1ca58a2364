"""The connections of one event loop for plain `redis://` and `unix://` URLs, without redis-py.

Three sockets at most: the automatic pipeline (`_resp.BarePipeline`), a second pipeline for
blocking reads (XREADGROUP ... BLOCK would hold up every other command), and a pub/sub
subscriber that resubscribes its channels after a reconnect. It offers the same methods as
`_py.PyLoopClient`; every object here belongs to the one event loop it was made in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import hiredis

from conveyor.engines.redis._resp import (
    BarePipeline,
    auth_command,
    open_socket,
    pack_command,
    parse_url,
)
from conveyor.engines.redis.client import RETRY_SECONDS, RedisClient, Watchers

__all__ = ["BareLoopClient"]

log = logging.getLogger("conveyor.redis")


class _Subscription(asyncio.Protocol):
    """A pub/sub socket: confirms (un)subscriptions in order and passes messages on."""

    def __init__(self, owner: _Subscriber) -> None:
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


class _Subscriber:
    """Channels and their callbacks over one pub/sub socket, resubscribed after a reconnect."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.loop = loop
        self.watchers = Watchers()
        self.socket: _Subscription | None = None
        self.reconnecting: asyncio.Task[None] | None = None
        self.connecting = asyncio.Lock()
        self.closed = False

    async def _connect(self) -> _Subscription:
        async with self.connecting:  # two first watchers must not open two sockets
            if self.socket is not None and self.socket.transport is not None:
                return self.socket
            return await self._open()

    async def _open(self) -> _Subscription:
        socket = await open_socket(self.url, lambda: _Subscription(self))
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


class BareLoopClient:
    """The bare connections of one event loop: pipeline, blocking reads, pub/sub."""

    def __init__(self, owner: RedisClient, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        parse_url(owner.url)  # a malformed URL fails here, not on first use
        self.pipeline = self._pipeline()
        self.blocker: BarePipeline | None = None
        self.subscriber = _Subscriber(owner.url, loop)

    def _pipeline(self) -> BarePipeline:
        sources = list(self.owner.scripts.source.values())
        owner = self.owner
        return BarePipeline(
            owner.url, owner.command_error, sources, owner.resendable, RETRY_SECONDS
        )

    def call(self, *command: Any) -> asyncio.Future[Any]:
        """Send one command through the automatic pipeline; the future gets its reply or error."""
        return self.pipeline.call(*command)

    async def blocking(self, *command: Any) -> Any:
        """Run a blocking read on a connection of its own."""
        if self.blocker is None:
            self.blocker = self._pipeline()
        return await self.blocker.call(*command)

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching `pattern`."""
        keys: list[bytes] = []
        cursor: bytes | str = "0"
        while True:
            cursor, batch = await self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys.extend(batch)
            if cursor in (b"0", "0"):
                return list(dict.fromkeys(keys))

    async def load_scripts(self) -> None:
        """Load every Lua script."""
        names = list(self.owner.scripts.source)
        shas = await asyncio.gather(
            *(self.call("SCRIPT", "LOAD", self.owner.scripts.source[n]) for n in names)
        )
        for name, sha in zip(names, shas, strict=True):
            self.owner.check_sha(name, sha.decode() if isinstance(sha, bytes) else sha)

    async def watch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        """Call `callback(data)` for every message on `channel` until `unwatch`.

        Raises `BrokerError` when the subscription cannot be made (Redis is down).
        """
        try:
            await self.subscriber.watch(channel, callback)
        except (OSError, TimeoutError) as exc:
            raise self.owner.connection_error(exc) from None

    async def unwatch(self, channel: bytes, callback: Callable[[bytes], None]) -> None:
        """Stop calling `callback` for `channel`."""
        await self.subscriber.unwatch(channel, callback)

    async def close(self) -> None:
        """Close every connection of this loop."""
        for pipeline in (self.pipeline, self.blocker):
            if pipeline is not None:
                await pipeline.close()
        await self.subscriber.close()
