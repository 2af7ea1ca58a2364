"""The one small interface every library adapter implements for the scenarios.

An adapter sends the three benchmark tasks (`noop`, `sleepy`, `stamp`, defined per library in
`bench.apps`), tells whether a task's result is stored, and names the command that starts the
library's worker. Sync clients simply block inside these coroutines: the driver runs nothing
else meanwhile.
"""

from __future__ import annotations

import abc
import asyncio
import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench import recorder
from bench.peers import brokers
from bench.protocol import Counts

__all__ = ["CHECK_BATCH", "TASKS", "Adapter", "Handle", "Unavailable"]

#: What `send` returns: the library's own handle to the task's result.
Handle = Any

#: The benchmark tasks: a no-op returning True, `asyncio.sleep(0.01)` then True, and
#: `stamp(sent)` returning `time.time() - sent` taken when it starts.
TASKS = ("noop", "sleepy", "stamp")

#: Result checks (and single sends in a burst) in flight at once.
CHECK_BATCH = 200


class Unavailable(Exception):
    """The library or configuration cannot run here; the message says why."""


class Adapter(abc.ABC):
    """Drives one library from the client side of the benchmark.

    Args:
        server_url: the harness's own server for the variant's group: its Redis, or its
            PostgreSQL database (`bench.variants.Variant.group`).
        options: the variant's options (see `bench.variants`). `results=none`: the app
            configures no result store (the library's default for taskiq, Celery and
            Dramatiq); `done=recorder`: completions are counted by `bench.recorder` on the
            harness's Redis instead of observed as stored results (`self.counter`).
        counts: the run's counts (concurrency is read from them).
        workdir: a scratch directory for files (SQLite databases).
    """

    #: The PyPI distribution whose version is reported.
    distribution: ClassVar[str]
    #: False for libraries whose tasks are plain functions: the sleep scenario is skipped.
    async_tasks: ClassVar[bool] = True
    #: The library's API for sending many calls at once, or None when it has none.
    bulk_api: ClassVar[str | None] = None

    def __init__(
        self, server_url: str, options: Mapping[str, str], counts: Counts, workdir: Path
    ) -> None:
        self.server_url = server_url
        self.options = dict(options)
        self.counts = counts
        self.workdir = workdir
        #: Set when "done" is counted by the recorder (the scenarios then wait on it).
        self.counter = (
            recorder.Counter(server_url) if self.options.get("done") == "recorder" else None
        )

    @property
    def stores_results(self) -> bool:
        """False when the app is configured to store no result (`results=none`)."""
        return self.options.get("results") != "none"

    def version(self) -> str:
        """The installed version of the library."""
        return importlib.metadata.version(self.distribution)

    def env(self) -> dict[str, str]:
        """Environment for this process (before `open`) and for the worker process."""
        env = {
            "BENCH_SERVER_URL": self.server_url,
            "BENCH_CONCURRENCY": str(self.counts.concurrency),
        }
        if self.on_redis:
            env["BENCH_REDIS_URL"] = self.server_url
        if self.amqp_names() is not None:
            env["BENCH_AMQP_URL"] = brokers.amqp_url()
            env["BENCH_AMQP_PREFIX"] = self.amqp_prefix
        if self.counter is not None:
            env[recorder.ENV] = self.counter.url
        if not self.stores_results:
            env["BENCH_RESULTS"] = "none"
        return env

    @property
    def amqp_prefix(self) -> str:
        """This run's prefix for queue and exchange names on the shared RabbitMQ."""
        return brokers.prefix(self.server_url)

    def amqp_names(self) -> tuple[list[str], list[str]] | None:
        """The queues and exchanges the variant declares on the shared RabbitMQ, which
        `reset` deletes; None for a variant that does not use RabbitMQ."""
        return None

    @property
    def on_redis(self) -> bool:
        """True when the harness's server is Redis (else PostgreSQL)."""
        return self.server_url.startswith("redis")

    @abc.abstractmethod
    def worker_argv(self, bin_dir: Path) -> list[str]:
        """The command that starts one worker process, with `bin_dir` the venv's bin/."""

    def worker_settings(self) -> str:
        """The worker's concurrency settings in a few words, for the report."""
        return f"{self.counts.concurrency} concurrent tasks"

    def reset(self) -> None:
        """Delete every queue and result this library may have left (worker stopped).

        On PostgreSQL there is nothing to do: the harness gives each session a new database.
        On RabbitMQ, the variant's own queues and exchanges are deleted (`amqp_names`).
        """
        names = self.amqp_names()
        if names is not None:
            brokers.drop_amqp(*names)
        if not self.on_redis:
            return
        import redis

        client = redis.Redis.from_url(self.server_url)
        try:
            client.flushall()
        finally:
            client.close()

    async def open(self) -> None:
        """Import the library's app and connect its client.

        Raises:
            Unavailable: this configuration cannot run (the message says why).
        """

    async def close(self) -> None:
        """Disconnect the client."""

    async def close_counter(self) -> None:
        """Close the recorder's connection, if any."""
        if self.counter is not None:
            await self.counter.close()

    @abc.abstractmethod
    async def send(self, task: str, *args: Any) -> Handle:
        """Send one call of `task` with one awaited (or blocking) call."""

    async def send_many(self, task: str, count: int) -> list[Handle]:
        """Send `count` argument-less calls of `task` with one call of the bulk API."""
        raise NotImplementedError(f"{self.distribution} has no bulk API")

    @abc.abstractmethod
    async def is_done(self, handle: Handle) -> bool:
        """True once the task's result is stored."""

    @abc.abstractmethod
    async def value(self, handle: Handle) -> Any:
        """The stored return value of a finished task."""

    async def missing(self, handles: Sequence[Handle]) -> list[Handle]:
        """The handles whose results are not stored yet (checked `CHECK_BATCH` at a time)."""
        left: list[Handle] = []
        for start in range(0, len(handles), CHECK_BATCH):
            batch = handles[start : start + CHECK_BATCH]
            done = await asyncio.gather(*(self.is_done(h) for h in batch))
            left += [h for h, ok in zip(batch, done, strict=True) if not ok]
        return left
