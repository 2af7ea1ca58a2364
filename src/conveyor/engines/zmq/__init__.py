"""The ZeroMQ engine (`zmq://host:port`): fire-and-forget messages from one sender to workers.

ZeroMQ keeps nothing, so this engine keeps no state (`KEEPS_STATE = False`): the registry
pairs it with another engine's state store and results (`?state=` or `state_url`, else this
process's memory). A `zmq://host:port` URL means: the sender binds every interface on `port`,
workers connect to `host:port`; `zmq_pub_host` and `zmq_sub_host` name both ends instead.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor._urls import safe_url
from conveyor.engines.base import DEFAULT_LEASE_SECONDS, Engine, StateStore
from conveyor.engines.zmq.transport import ZmqTransport
from conveyor.errors import ConfigurationError

__all__ = ["KEEPS_STATE", "ZmqTransport", "open_engine"]

#: The registry passes `store=` and fills the results (see `conveyor.engines.registry`).
KEEPS_STATE = False


def _hosts(url: str) -> tuple[str, str]:
    """Where the sender binds and where workers connect, for a `zmq://host:port` URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ConfigurationError(f"{safe_url(url)!r} names no port: use zmq://host:5555")
    return f"tcp://0.0.0.0:{port}", f"tcp://{parts.hostname or 'localhost'}:{port}"


def open_engine(
    url: str = "zmq://",
    *,
    store: StateStore,
    zmq_pub_host: str | None = None,
    zmq_sub_host: str | None = None,
    lease_seconds: float | None = None,
    send_timeout: float = 10.0,
    connect_wait: float = 0.3,
) -> Engine:
    """The ZeroMQ transport of `url`, or of the two hosts when both are given.

    Raises:
        ConfigurationError: a host is missing and the URL names no port.
    """
    if zmq_pub_host is None or zmq_sub_host is None:
        pub, sub = _hosts(url)
        zmq_pub_host, zmq_sub_host = zmq_pub_host or pub, zmq_sub_host or sub
    transport = ZmqTransport(
        zmq_pub_host,
        zmq_sub_host,
        store=store,
        lease_seconds=lease_seconds or DEFAULT_LEASE_SECONDS,
        send_timeout=send_timeout,
        connect_wait=connect_wait,
    )
    return Engine(transport)
