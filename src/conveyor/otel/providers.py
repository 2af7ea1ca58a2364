"""Whether the application has configured an OpenTelemetry SDK, found cheaply on the hot path.

Until an SDK sets a global provider, the API hands out stand-ins (proxy and no-op providers)
through which recording is wasted work. A `ProviderCheck` answers from memory and looks at the
global provider again at most once every `RECHECK_SECONDS` while there is none, and at once
after `again()` (the broker's startup): an SDK configured before the broker starts is used
from its first message, one configured later from within a second. Once found it is kept: the
API lets a global provider be set only once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["RECHECK_SECONDS", "ProviderCheck"]

#: Longest time an SDK configured after the broker started goes unnoticed.
RECHECK_SECONDS = 1.0

P = TypeVar("P")


class ProviderCheck(Generic[P]):
    """Finds the provider to record through: `given`, or the global one once an SDK set it.

    Args:
        given: the provider the application passed, used as it is unless it is a stand-in.
        lookup: returns the global provider.
        stand_ins: the API's classes that record nothing.
    """

    def __init__(
        self, given: P | None, lookup: Callable[[], P], stand_ins: tuple[type, ...]
    ) -> None:
        self.given = given
        self.lookup = lookup
        self.stand_ins = stand_ins
        self.provider: P | None = None
        self._next = 0.0

    def found(self) -> P | None:
        """The provider, or None while only stand-ins are there."""
        if self.provider is not None:
            return self.provider
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + RECHECK_SECONDS
        provider = self.given if self.given is not None else self.lookup()
        if not isinstance(provider, self.stand_ins):
            self.provider = provider
        return self.provider

    def again(self) -> None:
        """Look at the global provider again at the next `found`."""
        self._next = 0.0
