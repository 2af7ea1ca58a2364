"""Celery's benchmark tasks: Redis broker and Redis result backend."""

from __future__ import annotations

import os
import time

from celery import Celery

URL = os.environ["BENCH_REDIS_URL"]

app = Celery("bench", broker=URL, backend=URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)


@app.task
def noop() -> bool:
    """Do nothing."""
    return True


@app.task
def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    return time.time() - sent
