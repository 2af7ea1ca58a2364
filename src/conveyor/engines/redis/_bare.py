"""The connections of one event loop for plain `redis://` and `unix://` URLs, without redis-py.

Three sockets at most, over the `conveyor.drivers.resp` driver: the automatic pipeline
(`BarePipeline`), a second pipeline for blocking reads (XREADGROUP ... BLOCK would hold up
every other command), and a pub/sub `Subscriber` that resubscribes its channels after a
reconnect. It offers the same methods as
`_py.PyLoopClient`; every object here belongs to the one event loop it was made in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from conveyor.drivers.resp import BarePipeline, Subscriber, parse_url
from conveyor.engines.redis.client import RETRY_SECONDS, RedisClient

__all__ = ["BareLoopClient"]


class BareLoopClient:
    """The bare connections of one event loop: pipeline, blocking reads, pub/sub."""

    def __init__(self, owner: RedisClient, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        parse_url(owner.url)  # a malformed URL fails here, not on first use
        self.pipeline = self._pipeline()
        self.blocker: BarePipeline | None = None
        self.subscriber = Subscriber(owner.url, loop)

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
