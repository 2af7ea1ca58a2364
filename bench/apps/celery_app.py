"""Celery's benchmark tasks: Redis broker, or RabbitMQ (`BENCH_AMQP_URL` set: py-amqp, queue
and exchange `<BENCH_AMQP_PREFIX>_celery`, no remote control). Redis result backend, or, with
`BENCH_RESULTS=none`, none (Celery's default); the tasks then end with a `bench.recorder`
write."""

from __future__ import annotations

import os
import time

from celery import Celery

from bench import recorder

URL = os.environ.get("BENCH_REDIS_URL", "")
AMQP_URL = os.environ.get("BENCH_AMQP_URL")
BACKEND = None if os.environ.get("BENCH_RESULTS") == "none" else URL
RECORD = recorder.enabled()

app = Celery("bench", broker=AMQP_URL or URL, backend=BACKEND)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)
if AMQP_URL:  # names of this run only; remote control would declare shared pidbox exchanges
    app.conf.update(
        task_default_queue=f"{os.environ['BENCH_AMQP_PREFIX']}_celery",
        worker_enable_remote_control=False,
    )


@app.task
def noop() -> bool:
    """Do nothing."""
    if RECORD:
        recorder.record()
    return True


@app.task
def stamp(sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start."""
    delay = time.time() - sent
    if RECORD:
        recorder.record(delay)
    return delay
