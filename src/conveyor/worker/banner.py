"""What a worker says when it starts: the queues it consumes and where, the tasks it serves, and
a warning for each queue its registered tasks go to that it does not consume (their messages
would wait for another worker, and a sender's `--wait` with them).

A few lines whatever the number of tasks: names past `SHOWN_TASKS` are counted, not listed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from conveyor._urls import local_file
from conveyor.inspector import Inspector
from conveyor.options import DEFAULT_QUEUE

if TYPE_CHECKING:
    from conveyor.broker import Broker

__all__ = ["SHOWN_TASKS", "start_lines"]

#: Task names the banner lists at most; `conveyor inspect tasks` lists them all.
SHOWN_TASKS = 12
#: Built-in tasks every broker registers, left out of the banner.
_BUILT_IN = "conveyor:"


def start_lines(broker: Broker, queues: Sequence[str], name: str) -> Iterator[tuple[int, str]]:
    """The banner of worker `name` consuming `queues` (empty: every queue), as (level, line)."""
    url = broker.transport.safe_url
    path = local_file(url)
    where = f"{url} (file {path})" if path and not url.endswith(path) else url
    yield logging.INFO, f"worker {name} consuming {','.join(queues) or 'every queue'} on {where}"
    tasks = [t for t in Inspector(broker).tasks() if not t.name.startswith(_BUILT_IN)]
    if not tasks:
        yield logging.INFO, "no tasks registered: import the modules that declare them"
        return
    shown = [t.name if t.queue == DEFAULT_QUEUE else f"{t.name} [{t.queue}]" for t in tasks]
    yield logging.INFO, f"{len(tasks)} task(s): {_listed(shown, SHOWN_TASKS)}"
    if not queues:
        return
    stranded: dict[str, list[str]] = {}
    for task in tasks:
        if task.queue not in queues:
            stranded.setdefault(task.queue, []).append(task.name)
    for queue, names in sorted(stranded.items()):
        yield (
            logging.WARNING,
            f"queue {queue!r} ({_listed(names, 3)}) is not consumed by this worker: its tasks "
            f"wait for a worker that consumes it (--queues {','.join([*queues, queue])})",
        )


def _listed(names: list[str], limit: int) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
