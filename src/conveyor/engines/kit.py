"""Small helpers several engines share, kept apart from the contracts of `engines.base`.

Each is written once here instead of in each engine: the name a consumer records as the holder
of its leases, the checks every transport and store make of their arguments before touching a
server, and the startup/shutdown every part of an engine does on its one client.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Generic, Protocol, TypeVar

from conveyor.engines.base import Delivery
from conveyor.errors import ConfigurationError

__all__ = ["OnClient", "check_lease", "check_window", "consumer_id", "typed_receipt"]

R = TypeVar("R")


def consumer_id() -> str:
    """A name for one consumer (host, pid and a random part): what an engine records as the
    holder of the messages it leased, so a receipt settles only its own claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def typed_receipt(delivery: Delivery, kind: type[R], transport: str) -> R:
    """The receipt of a delivery that `transport` (named for the error) made as a `kind`.

    Raises:
        TypeError: the delivery came from another transport.
    """
    receipt = delivery.receipt
    if not isinstance(receipt, kind):
        raise TypeError(f"delivery {delivery.task_id!r} did not come from {transport}")
    return receipt


def check_lease(lease_seconds: float) -> None:
    """Refuse a lease no transport can keep, before anything is opened.

    Raises:
        ConfigurationError: `lease_seconds` is not positive (or not a number: NaN).
    """
    if not lease_seconds > 0:
        raise ConfigurationError(f"lease_seconds must be positive, not {lease_seconds!r}")


def check_window(limit: int, period: float) -> None:
    """Refuse a rate window no store can keep, before `window_acquire` touches anything.

    Raises:
        ConfigurationError: `limit` is below 1 or `period` is not positive.
    """
    if limit < 1 or period <= 0:
        raise ConfigurationError(
            f"a rate limit needs limit >= 1 and period > 0, not {limit}/{period}"
        )


class _Client(Protocol):
    async def startup(self) -> None: ...

    async def close(self) -> None: ...


C = TypeVar("C", bound=_Client)


class OnClient(Generic[C]):
    """What an engine's transport, state store and result store share: one client of the
    engine (its connections), started on startup and closed on shutdown. Listed before the
    contract class, so these are the methods that run."""

    client: C

    async def startup(self) -> None:
        """Connect (and create what the engine needs, once per client)."""
        await self.client.startup()

    async def shutdown(self) -> None:
        """Close this event loop's connections (what was sent is flushed first)."""
        await self.client.close()
