"""Procrastinate's benchmark tasks on the harness's PostgreSQL (its psycopg connector with the
connector's default pool). Procrastinate stores no return value: `stamp` writes its value to
`bench_stamps` (`bench.apps.pg_stamps`).
"""

from __future__ import annotations

import asyncio
import os
import time

from procrastinate import App, JobContext, PsycopgConnector

from bench.apps import pg_stamps

URL = os.environ["BENCH_SERVER_URL"]

app = App(connector=PsycopgConnector(conninfo=URL))


@app.task(name="noop")
async def noop() -> bool:
    """Do nothing."""
    return True


@app.task(name="sleepy")
async def sleepy() -> bool:
    """Wait 10 ms without blocking the loop."""
    await asyncio.sleep(0.01)
    return True


@app.task(name="stamp", pass_context=True)
async def stamp(context: JobContext, sent: float) -> float:
    """Seconds from `sent` (the enqueue time) to this start, stored under the job's id."""
    value = time.time() - sent
    assert context.job is not None
    assert context.job.id is not None
    await pg_stamps.record(str(context.job.id), value)
    return value
