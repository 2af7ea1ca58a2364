"""What the Taskiq plug-in modules (`taskiq_redis`, `taskiq_nats`, `taskiq_aio_pika`) share:
a store-backed schedule source that remembers the URL it was given, and a name for a broker
class conveyor does not have."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from conveyor._urls import safe_url, split_options
from conveyor.compat.taskiq._schedules import StoreScheduleSource

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["UrlScheduleSource", "name_part", "not_here"]

log = logging.getLogger("conveyor.compat")


class UrlScheduleSource(StoreScheduleSource):
    """A Taskiq schedule source made with a server URL: its schedules are kept in the broker's
    own state store, with the broker's claims, so each run is sent once. Binding it to a broker
    on another server logs where they really are."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__()
        self.url = url
        self.options = options

    def bind(self, broker: Broker) -> None:
        """Keep the schedules in `broker`'s state store."""
        if self.broker is None and _server(getattr(broker, "url", "")) != _server(self.url):
            log.warning(
                "%s(%s): schedules are kept in the state store of %r",
                type(self).__name__,
                safe_url(self.url),
                broker,
            )
        super().bind(broker)


def _server(url: str) -> str:
    return split_options(url, ("prefix", "lease"))[0].rstrip("/")


def name_part(value: str) -> str:
    """`value` as a conveyor prefix: letters, digits, `_` and `-`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value) or "conveyor"


def not_here(module: str, name: str, why: str) -> ImportError:
    """The error for a Taskiq name conveyor does not provide, saying what to use instead."""
    return ImportError(f"{module}.{name} has no conveyor form: {why}", name=name)
