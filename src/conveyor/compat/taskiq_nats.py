"""`taskiq_nats`'s names on conveyor's NATS JetStream engine: `from taskiq_nats import X`
becomes `from conveyor.compat.taskiq_nats import X`.

Every broker is conveyor's `NatsBroker`: JetStream work-queue streams and durable pull
consumers, results and state in JetStream too (so `NatsBroker`, plain NATS pub/sub in Taskiq,
keeps messages here). `servers` may be a list; the `subject` (or `stream_name`) becomes the
prefix of conveyor's streams; `queue` and the consumer options have no effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from conveyor import brokers
from conveyor.compat._plugins import UrlScheduleSource, name_part
from conveyor.compat.taskiq._broker import AsyncBroker
from conveyor.engines import registry
from conveyor.engines.base import ResultBackend

__all__ = [
    "NATSKeyValueScheduleSource",
    "NATSObjectStoreResultBackend",
    "NatsBroker",
    "PullBasedJetStreamBroker",
    "PushBasedJetStreamBroker",
    "nats_url",
]


def nats_url(servers: str | Sequence[str]) -> str:
    """One conveyor URL for a server or a list of servers (`nats://a:4222,nats://b:4222`)."""
    return servers if isinstance(servers, str) else ",".join(servers)


class NatsBroker(AsyncBroker, brokers.NatsBroker):
    """Taskiq's NATS brokers: conveyor's `NatsBroker` on `servers`.

    Args:
        servers: `nats://host:4222`, or a list of them.
        subject: the prefix of conveyor's streams (made of letters, digits, `_`, `-`).
        queue: accepted; every worker of the broker shares the work.
        result_backend: where results go; JetStream by default.
        task_id_generator: makes task ids.
        **options: Taskiq's stream, consumer and connection options: accepted, no effect.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://localhost:4222",
        subject: str = "taskiq_tasks",
        queue: str | None = None,
        result_backend: ResultBackend | None = None,
        task_id_generator: Callable[[], str] | None = None,
        **options: Any,
    ) -> None:
        prefix = name_part(options.pop("stream_name", None) or subject)
        super().__init__(nats_url(servers), prefix=prefix, task_id_generator=task_id_generator)
        if result_backend is not None:
            self.with_result_backend(result_backend)


class PullBasedJetStreamBroker(NatsBroker):
    """Taskiq's pull-based JetStream broker: conveyor's `NatsBroker`."""


class PushBasedJetStreamBroker(NatsBroker):
    """Taskiq's push-based JetStream broker: conveyor's `NatsBroker` (which pulls)."""


def NATSObjectStoreResultBackend(  # Taskiq's class name; conveyor gives its store
    servers: str | Sequence[str],
    keep_results: bool = True,
    bucket_name: str = "taskiq_results",
    **options: Any,
) -> ResultBackend:
    """Results in JetStream on `servers`, under the prefix `bucket_name`."""
    results = registry.open_url(nats_url(servers), prefix=name_part(bucket_name)).results
    assert results is not None  # the NATS engine always has a result store
    return results


class NATSKeyValueScheduleSource(UrlScheduleSource):
    """Schedules added at run time, kept in the broker's state store."""

    def __init__(self, servers: str | Sequence[str], **options: Any) -> None:
        super().__init__(nats_url(servers), **options)
