"""PgQueuer's benchmark entrypoints and its worker, on asyncpg (PgQueuer's own asyncpg driver).

The worker runs as `python -m bench.apps.pgqueuer_app`, which does what `pgq run
bench.apps.pgqueuer_app:main --max-concurrent-tasks N` does (`pgqueuer.run` on uvloop, every
other option at its default): in 1.6.0 `pgq run` exits at once on its own `--log-level` option
(`AttributeError: 'str' object has no attribute 'name'`), even when it is not given.

PgQueuer stores no return value (a finished job is moved to its `pgqueuer_log` table with its
status): `stamp` writes its value to `bench_stamps` (`bench.apps.pg_stamps`). The enqueue time
travels as the payload (`repr` of the float).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator

import asyncpg
from pgqueuer import AsyncpgDriver, Job, PgQueuer

from bench.apps import pg_stamps

URL = os.environ["BENCH_SERVER_URL"]


@contextlib.asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """The worker's PgQueuer with the three entrypoints (a factory: an async context manager)."""
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

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    import uvloop
    from pgqueuer import run

    logging.basicConfig(level=logging.WARNING)
    limit = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    uvloop.run(run(main, max_concurrent_tasks=limit))
