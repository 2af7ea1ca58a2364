"""The RabbitMQ engine (`amqp://`, `amqps://`): messages on RabbitMQ, nothing else.

RabbitMQ keeps no small atomic state, so this engine keeps none (`KEEPS_STATE = False`): the
registry hands it another engine's state store (`?state=` or `state_url`, else this process's
memory), where the transport keeps its index, and fills the results from that engine too.
"""

from __future__ import annotations

try:  # the package's one check: its modules import aio-pika and aiormq plainly
    import aio_pika  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the RabbitMQ engine needs the amqp extra: pip install 'conveyor[amqp]'"
    ) from exc

from conveyor.engines.amqp.transport import AmqpTransport
from conveyor.engines.base import Engine, StateStore

__all__ = ["KEEPS_STATE", "AmqpTransport", "open_engine"]

#: The registry passes `store=` and fills the results (see `conveyor.engines.registry`).
KEEPS_STATE = False


def open_engine(
    url: str,
    *,
    store: StateStore,
    prefix: str = "conveyor",
    lease_seconds: float | None = None,
    linger_seconds: float = 0.0,
) -> Engine:
    """The RabbitMQ transport of `url`, its index in `store`; the URL's `?prefix=` and `?lease=`
    win over the arguments.

    Raises:
        ConfigurationError: not an AMQP URL, or a lease that is not a positive number.
    """
    transport = AmqpTransport(
        url, store=store, prefix=prefix, lease_seconds=lease_seconds, linger_seconds=linger_seconds
    )
    return Engine(transport)
