"""What the web process remembers itself: the tasks it sent, so the dashboard shows them at once."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from conveyor.recent import NAME_LIMIT, shown_call

__all__ = ["WebState"]

SENT_SIZE = 50


class WebState:
    """The last tasks sent through this web process, oldest first."""

    def __init__(self) -> None:
        self._sent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: Tasks sent so far: a snapshot read before the last send is out of date.
        self.sends = 0

    def sent(
        self,
        task_id: str,
        task_name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any],
        queue: str,
    ) -> None:
        """Remember a task just sent to `queue` (its status reads "queued" until a worker
        reports it), its call cut as a worker cuts it (`conveyor.recent`)."""
        self._sent[task_id] = {
            "task_id": task_id,
            "task_name": task_name[:NAME_LIMIT],
            "status": "queued",
            "queue": queue[:NAME_LIMIT],
            **shown_call(args, kwargs, labels),
            "sent": time.time(),
        }
        if len(self._sent) > SENT_SIZE:
            self._sent.popitem(last=False)
        self.sends += 1

    def find(self, task_id: str) -> dict[str, Any] | None:
        """A task this process sent, or None."""
        return self._sent.get(task_id)

    def merged(self, recent: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The workers' recent tasks plus sent ones no worker reported yet, newest first."""
        known = {entry["task_id"] for entry in recent}
        waiting = [entry for entry in self._sent.values() if entry["task_id"] not in known]
        merged = [*recent, *waiting]
        merged.sort(key=_when, reverse=True)
        return merged


def _when(entry: dict[str, Any]) -> float:
    return float(entry.get("finished") or entry.get("started") or entry.get("sent") or 0.0)
