"""The Redis engine (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`,
`redis+cluster://`): queues on Redis Streams, state and results in the same Redis, under one key
prefix. `open_engine` wires the three parts on one `RedisClient`, so they share each event
loop's connections and the transport's ack can store a result in the same script call.
`docs/engines/redis.md` and the header of `redis.lua` describe every key.
"""

from __future__ import annotations

from conveyor._urls import float_option, split_options
from conveyor.engines.base import DEFAULT_LEASE_SECONDS, Engine
from conveyor.engines.redis.client import RedisClient
from conveyor.engines.redis.results import RedisResultBackend
from conveyor.engines.redis.store import RedisStore
from conveyor.engines.redis.transport import RedisTransport

__all__ = ["RedisClient", "RedisResultBackend", "RedisStore", "RedisTransport", "open_engine"]


def open_engine(
    url: str,
    *,
    prefix: str = "conveyor",
    lease_seconds: float | None = None,
    result_ttl: float | None = 24 * 3600.0,
    dead_letter_limit: int = 100_000,
) -> Engine:
    """The transport, state store and result store of one Redis, sharing one client.

    The URL's query options `?prefix=` and `?lease=` win over `prefix` and `lease_seconds`;
    they are stripped before the URL reaches a driver.

    Raises:
        ConfigurationError: a malformed option: a prefix with a key-pattern character, a lease
            that is not a positive number.
    """
    plain, query = split_options(url)
    lease = float_option(query, "lease", url)
    if lease is None:
        lease = DEFAULT_LEASE_SECONDS if lease_seconds is None else lease_seconds
    client = RedisClient(plain, query.get("prefix") or prefix)
    results = RedisResultBackend(plain, result_ttl=result_ttl, client=client)
    transport = RedisTransport(
        client, lease_seconds=lease, dead_letter_limit=dead_letter_limit, results=results
    )
    return Engine(transport, RedisStore(client), results)
