"""`taskiq_redis`'s names on conveyor's Redis engine: `from taskiq_redis import X` becomes
`from conveyor.compat.taskiq_redis import X`.

The brokers are one conveyor `RedisBroker` (Redis Streams, consumer groups, leases renewed
while a task runs, results in the same Redis): `RedisStreamBroker` and `ListQueueBroker` differ
in Taskiq, not here. `queue_name` becomes the key prefix. `RedisAsyncResultBackend` is the
Redis engine's result store on its own URL; `RedisScheduleSource` and `ListRedisScheduleSource`
keep schedules in the broker's state store. `PubSubBroker` (a broadcast) has no conveyor form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor import brokers
from conveyor.compat._plugins import UrlScheduleSource, name_part, not_here
from conveyor.compat.taskiq._broker import AsyncBroker
from conveyor.engines import registry
from conveyor.engines.base import ResultBackend

__all__ = [
    "ListQueueBroker",
    "ListRedisScheduleSource",
    "RedisAsyncResultBackend",
    "RedisScheduleSource",
    "RedisStreamBroker",
]


class RedisStreamBroker(AsyncBroker, brokers.RedisBroker):
    """Taskiq's Redis brokers: conveyor's `RedisBroker` on `url`, keys prefixed `queue_name`.

    Args:
        url: `redis://host:port/db` (every conveyor Redis URL works).
        queue_name: the prefix of every key.
        result_backend: where results go; the same Redis by default.
        task_id_generator: makes task ids.
        **options: Taskiq's other options (pool sizes, consumer names, timeouts) are accepted
            and have no effect: conveyor sizes and names these itself.
    """

    def __init__(
        self,
        url: str,
        queue_name: str = "taskiq",
        *,
        result_backend: ResultBackend | None = None,
        task_id_generator: Callable[[], str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, prefix=name_part(queue_name), task_id_generator=task_id_generator)
        if result_backend is not None:
            self.with_result_backend(result_backend)


class ListQueueBroker(RedisStreamBroker):
    """Taskiq's list broker: here the same as `RedisStreamBroker` (acknowledged, redelivered
    after a crash)."""


def RedisAsyncResultBackend(  # Taskiq's class name; conveyor gives its store
    redis_url: str,
    keep_results: bool = True,
    result_ex_time: int | None = None,
    result_px_time: int | None = None,
    prefix_str: str | None = None,
    **options: Any,
) -> ResultBackend:
    """Results in the Redis at `redis_url` (its `?prefix=` or `prefix_str` names the keys),
    kept `result_ex_time` seconds (or `result_px_time` ms), a day when neither is given.

    `keep_results=False` (delete a result once read) is not done: results expire instead."""
    ttl: float = 24 * 3600.0
    if result_ex_time is not None:
        ttl = float(result_ex_time)
    elif result_px_time is not None:
        ttl = result_px_time / 1000
    prefix = name_part(prefix_str) if prefix_str else "conveyor"
    results = registry.open_url(redis_url, prefix=prefix, result_ttl=ttl).results
    assert results is not None  # the Redis engine always has a result store
    return results


class RedisScheduleSource(UrlScheduleSource):
    """Schedules added at run time (`schedule_by_cron(source, ...)`), kept in the broker's
    state store."""


class ListRedisScheduleSource(RedisScheduleSource):
    """Taskiq's newer Redis schedule source: the same as `RedisScheduleSource` here."""


def __getattr__(name: str) -> object:
    if name in ("PubSubBroker", "PubSubSentinelBroker", "PubSubClusterBroker"):
        raise not_here(__name__, name, "a broadcast to every worker; use RedisStreamBroker")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
