"""Results in Redis: one key per result with a TTL, announced on a per-task channel.

Keys (P = prefix): `P:r:<id>` result, `P:p:<id>` progress, `P:g:<id>` a generator's items (a
list) and `P:gc:<id>` its closed flag. A stored result is always published on `P:done:<id>`
(here, or by the transport's `ack` script that stores it with the ack); `watch` subscribes to
that channel, so the contract's `wait_result` wakes at once without polling.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.engines.base import ResultBackend, StreamChunk
from conveyor.engines.kit import OnClient
from conveyor.engines.redis.client import RedisClient, ms, px

__all__ = ["RedisResultBackend"]

log = logging.getLogger("conveyor.redis")


class RedisResultBackend(OnClient[RedisClient], ResultBackend):
    """Keeps results, progress and generator streams in Redis, expiring after a TTL.

    Args:
        url: a Redis URL (see `RedisClient`); usable with any broker.
        prefix: namespace of every key.
        result_ttl: seconds a result is kept when the task sets no `result_ttl`; None keeps it.
        client: the `RedisClient` to share with the engine's transport and state store.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "conveyor",
        result_ttl: float | None = 24 * 3600.0,
        client: RedisClient | None = None,
    ) -> None:
        self.client = client or RedisClient(url, prefix)
        self.default_ttl = result_ttl

    def result_key(self, task_id: str) -> str:
        """The key holding a task's result."""
        return self.client.key("r", task_id)

    def done_channel(self, task_id: str) -> str:
        """The channel a stored result is announced on."""
        return self.client.key("done", task_id)

    async def set_result(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the result and announce it."""
        await self.client.calls(
            [
                ("SET", self.result_key(task_id), data, *px(ttl)),
                ("PUBLISH", self.done_channel(task_id), b"1"),
            ]
        )

    async def get_result(self, task_id: str) -> bytes | None:
        """The stored result, or None."""
        data: bytes | None = await self.client.call("GET", self.result_key(task_id))
        return data

    async def watch(
        self, task_id: str, wake: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Subscribe to the task's channel (`P:done:<id>`); None while Redis cannot be reached."""
        here, channel = self.client.here(), self.done_channel(task_id).encode()

        def announced(_: bytes) -> None:
            wake()

        try:
            await here.watch(channel, announced)
        except Exception:  # a connection may fail in several ways while it drops
            log.debug("could not subscribe to %r", channel, exc_info=True)
            return None

        async def unwatch() -> None:
            await here.unwatch(channel, announced)

        return unwatch

    async def delete(self, task_id: str) -> None:
        """Forget everything stored for a task."""
        keys = [self.client.key(kind, task_id) for kind in ("r", "p", "g", "gc")]
        await self.client.calls([("DEL", key) for key in keys])

    async def set_progress(self, task_id: str, data: bytes, ttl: float | None) -> None:
        """Store the latest progress report."""
        await self.client.call("SET", self.client.key("p", task_id), data, *px(ttl))

    async def get_progress(self, task_id: str) -> bytes | None:
        """The latest progress report, or None."""
        data: bytes | None = await self.client.call("GET", self.client.key("p", task_id))
        return data

    async def push_stream(self, task_id: str, items: list[bytes], ttl: float | None) -> None:
        """Append a generator's items; the stream's TTL restarts."""
        key = self.client.key("g", task_id)
        commands: list[tuple[Any, ...]] = [("RPUSH", key, *items)]
        if ttl is not None:
            commands.append(("PEXPIRE", key, ms(ttl)))
        await self.client.calls(commands)

    async def reset_stream(self, task_id: str) -> None:
        """Drop a stream so a redelivered generator starts afresh."""
        await self.client.calls(
            [("DEL", self.client.key("g", task_id)), ("DEL", self.client.key("gc", task_id))]
        )

    async def close_stream(self, task_id: str, ttl: float | None) -> None:
        """Mark the stream finished."""
        commands: list[tuple[Any, ...]] = [("SET", self.client.key("gc", task_id), b"1", *px(ttl))]
        if ttl is not None:
            commands.append(("PEXPIRE", self.client.key("g", task_id), ms(ttl)))
        await self.client.calls(commands)

    async def read_stream(self, task_id: str, offset: int) -> StreamChunk:
        """Items from `offset` on, the next offset, and whether the stream is closed."""
        closed, items = await self.client.calls(
            [
                ("EXISTS", self.client.key("gc", task_id)),
                ("LRANGE", self.client.key("g", task_id), offset, -1),
            ]
        )
        return offset + len(items), list(items), bool(closed)
