"""PgQueuer's benchmark entrypoints and the factory its worker runs
(`pgq run bench.apps.pgqueuer_app:main`), on asyncpg (PgQueuer's own asyncpg driver).

PgQueuer stores no return value (a finished job is moved to its `pgqueuer_log` table with its
status): `stamp` writes its value to `bench_stamps` (`bench.apps.pg_stamps`). The enqueue time
travels as the payload (`repr` of the float).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import asyncpg
from pgqueuer import AsyncpgDriver, Job, PgQueuer

from bench.apps import pg_stamps

URL = os.environ["BENCH_SERVER_URL"]


async def main() -> PgQueuer:
    """The worker's PgQueuer with the three entrypoints (logging at WARNING: `pgq run
    --log-level` fails in 1.6.0, `'str' object has no attribute 'name'`)."""
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    connection = await asyncpg.connect(URL)
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Do nothing."""

    @pgq.entrypoint("sleepy")
    async def sleepy(job: Job) -> None:
        """Wait 10 ms without blocking the loop."""
        await asyncio.sleep(0.01)

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        """Seconds from the enqueue time (the payload) to this start, stored under the job id."""
        value = time.time() - float(job.payload or b"0")
        await pg_stamps.record(str(job.id), value)

    return pgq
