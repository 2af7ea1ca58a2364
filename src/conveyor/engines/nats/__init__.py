"""The NATS JetStream engine (`nats://[user:password@]host:4222`, several servers separated by
commas): messages, state and results in the JetStream streams of one prefix, so no second
store is needed. `docs/engines/nats.md` describes the streams, subjects and guarantees.

`open_engine` wires one `NatsClient` (one connection per event loop) shared by the transport,
the state store and the result store.
"""

from __future__ import annotations

from conveyor._urls import float_option, split_options
from conveyor.engines.base import DEFAULT_LEASE_SECONDS, Engine
from conveyor.engines.nats.client import NatsClient
from conveyor.engines.nats.results import NatsResultBackend
from conveyor.engines.nats.store import NatsStore
from conveyor.engines.nats.transport import NatsTransport

__all__ = ["NatsClient", "NatsResultBackend", "NatsStore", "NatsTransport", "open_engine"]


def open_engine(
    url: str,
    *,
    prefix: str | None = "conveyor",
    lease_seconds: float | None = None,
    result_ttl: float | None = 24 * 3600.0,
) -> Engine:
    """The transport, state store and result store of one app on a NATS server.

    The URL's `?prefix=` and `?lease=` win over `prefix` and `lease_seconds`
    (`DEFAULT_LEASE_SECONDS` when neither says).

    Raises:
        ConfigurationError: a malformed URL, prefix or lease.
    """
    url, query = split_options(url)
    lease = float_option(query, "lease", url) or lease_seconds or DEFAULT_LEASE_SECONDS
    client = NatsClient(url, query.get("prefix") or prefix or "conveyor")
    store = NatsStore(client)
    results = NatsResultBackend(client, default_ttl=result_ttl)
    return Engine(NatsTransport(client, lease_seconds=lease, store=store), store, results)
