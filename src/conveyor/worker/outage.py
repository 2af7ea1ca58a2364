"""`Outage`: how the worker logs an operation it repeats while the broker is away (renewing
leases, reading cancel requests, beating): one WARNING line when it starts failing, the rest at
DEBUG with their tracebacks, one INFO line when it works again. A broker outage of a minute is
three lines in the log, not sixty tracebacks.
"""

from __future__ import annotations

import logging

__all__ = ["Outage"]

log = logging.getLogger("conveyor.worker")


class Outage:
    """The failures of one repeated operation, named by `what` ("extend leases")."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        """Log a failure: a line the first time, DEBUG afterwards."""
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "could not %s: %s", self.what, _one_line(exc))
        log.debug("could not %s", self.what, exc_info=exc)

    def worked(self) -> None:
        """Log that it works again, if it had failed."""
        if self.failures:
            log.info("%s works again after %d failure(s)", self.what, self.failures)
            self.failures = 0


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
