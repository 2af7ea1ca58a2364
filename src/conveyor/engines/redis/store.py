"""The Redis state store: plain commands on `P:kv:<key>` strings, and three scripts of
`redis.lua` where one step needs several commands (`incr` with a ttl on creation, `set_add` on
`P:set:<key>`, `rate` on `P:rate:<key>`). Every method is one command or one script, so each is
atomic across every process that uses the same Redis and prefix; a value's ttl is Redis's own
key expiry, so an expired value is absent to every command.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.engines.base import StateStore
from conveyor.engines.kit import OnClient, check_window
from conveyor.engines.redis.client import RedisClient, ms, px
from conveyor.errors import BrokerError

__all__ = ["RedisStore"]


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class RedisStore(OnClient[RedisClient], StateStore):
    """`StateStore` in Redis, under the prefix of the engine's `RedisClient`.

    Args:
        client: the connection shared with the engine's transport and result store.
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.safe_url = client.safe_url

    def _kv(self, key: str) -> str:
        return self.client.key("kv", key)

    async def get(self, key: str) -> bytes | None:
        """The live value of `key`, or None."""
        value: bytes | None = await self.client.call("GET", self._kv(key))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live values of `keys`, in order, in one MGET."""
        return await self.client.mget([self._kv(key) for key in keys])

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `key`, expiring after `ttl` seconds when given."""
        await self.client.call("SET", self._kv(key), value, *px(ttl))

    async def set_nx(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store `key` only if absent (SET NX); True when this call stored it."""
        return bool(await self.client.call("SET", self._kv(key), value, "NX", *px(ttl)))

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it held a live value."""
        return bool(await self.client.call("DEL", self._kv(key)))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to an integer key; `ttl` applies when this call creates it.

        Raises:
            BrokerError: the key holds something other than an integer.
        """
        try:
            return int(await self.client.script("incr", [self._kv(key)], [amount, ms(ttl)]))
        except BrokerError as exc:
            if "not an integer" in str(exc):
                raise BrokerError(f"kv key {key!r} does not hold an integer") from None
            raise

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key starting with `prefix`, with its value (SCAN, then MGET)."""
        start = self._kv("")
        keys = await self.client.scan(start + _glob_escape(prefix) + "*")
        values = await self.client.mget(keys)
        return {
            k.decode(errors="replace")[len(start) :]: v
            for k, v in zip(keys, values, strict=True)
            if v is not None
        }

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> int:
        """SADD and SCARD in one script; `ttl` renews the whole set's expiry."""
        found = await self.client.script(
            "set_add", [self.client.key("set", key)], [member, ms(ttl)]
        )
        return int(found)

    async def window_acquire(self, key: str, limit: int, period: float) -> float:
        """Take one of at most `limit` grants per sliding `period`; else the seconds to wait.

        Raises:
            ConfigurationError: `limit` is below 1 or `period` is not positive.
        """
        check_window(limit, period)
        wait = await self.client.script(
            "rate", [self.client.key("rate", key)], [limit, period * 1000]
        )
        return float(wait)
