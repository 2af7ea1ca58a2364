"""The public broker classes and `broker_from_url`.

Each class only binds an engine to the application object: it asks the registry
(`conveyor.engines.registry`) for the engine its URL names and hands the engine's transport,
state store and result store to `conveyor.broker.Broker`. `Broker` here adds what needs the
worker: running one in this process (`broker.run()`, the QTasks promise).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from conveyor import broker as core
from conveyor._urls import split_options
from conveyor.engines import registry
from conveyor.engines.base import Delivery, Engine, Outgoing, ResultBackend
from conveyor.errors import ConfigurationError

__all__ = [
    "DEFAULT_URL",
    "AmqpBroker",
    "Broker",
    "InMemoryBroker",
    "NatsBroker",
    "PostgresBroker",
    "RedisBroker",
    "SqliteBroker",
    "ZeroMQBroker",
    "broker_from_url",
]

DEFAULT_URL = "sqlite:///conveyor.db"
_DAY = 24 * 3600.0


class Broker(core.Broker):
    """The application object (`conveyor.broker.Broker`) with a worker to run in this process."""

    def __init__(self, engine: Engine, **options: Any) -> None:
        if engine.transport is None or engine.store is None or engine.results is None:
            raise ConfigurationError(f"{type(self).__name__}: the engine lacks a part")
        super().__init__(engine.transport, engine.store, engine.results, **options)

    def run(self, **options: Any) -> None:
        """Run a worker until SIGINT/SIGTERM, with the CLI's options (`python main.py`):
        `queues`, `workers`, `max_async_tasks`, `with_scheduler`, `log_level`, ..."""
        from conveyor.worker.run import run_blocking  # not loaded by processes that only send

        run_blocking(self, **options)

    async def run_async(self, **options: Any) -> None:
        """`run` inside a running event loop."""
        from conveyor.worker.run import run_in_loop

        await run_in_loop(self, **options)


class InMemoryBroker(Broker):
    """A broker inside one process, for tests and demos: tasks run in this event loop.

    Args:
        sync_tasks_pool_size: threads for sync tasks.
        max_stored_results: results kept in memory (oldest dropped first).
        cast_types: cast arguments and results to the annotations.
        result_backend: another result store instead of the in-memory one.
        task_id_generator: makes task ids.
        await_inplace: `kiq` runs the task before it returns (unit tests).
        max_async_tasks: tasks run at once by the in-process worker.
    """

    def __init__(
        self,
        sync_tasks_pool_size: int = 4,
        max_stored_results: int = 1000,
        cast_types: bool = True,
        result_backend: ResultBackend | None = None,
        task_id_generator: Callable[[], str] | None = None,
        await_inplace: bool = False,
        *,
        logs_format: str | None = None,
        max_async_tasks: int = 100,
        **options: Any,
    ) -> None:
        engine = registry.open_url("memory://", max_stored_results=max_stored_results)
        super().__init__(
            _with_results(engine, result_backend),
            cast_types=cast_types,
            task_id_generator=task_id_generator,
            **options,
        )
        self.await_inplace = await_inplace
        self._pool_size = sync_tasks_pool_size
        self._max_async_tasks = max_async_tasks
        self._worker_stop: asyncio.Event | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._worker: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inplace: Any = None

    async def ensure_started(self) -> None:
        """Start the broker, or move its worker to this event loop when the loop it ran in has
        ended: a broker made at import is used by each test's own loop in turn."""
        if self._started and self._worker_loop_ended():
            self._abandon_worker()
            await self._start_worker()
        await super().ensure_started()

    async def startup(self) -> None:
        """Start the broker and its in-process worker (in this event loop)."""
        if self._started:
            if self._worker_loop_ended():
                self._abandon_worker()
                await self._start_worker()
            return
        await super().startup()
        await self._start_worker()

    def _worker_loop_ended(self) -> bool:
        """True when the worker's event loop no longer runs (a live one keeps its worker: it
        serves sends from any loop or thread)."""
        loop = self._loop
        return loop is None or loop.is_closed() or not loop.is_running()

    async def _start_worker(self) -> None:
        from conveyor.worker.consumer import Worker, WorkerOptions

        options = WorkerOptions(
            max_async_tasks=self._max_async_tasks,
            max_threads=self._pool_size,
            receive_timeout=0.2,
            queues=(),  # every queue
        )
        worker = Worker(self, options)
        self._worker, self._inplace = worker, worker.runner
        self._loop = asyncio.get_running_loop()
        self._start_lock = None  # an asyncio.Lock belongs to the loop that first waits on it
        if not self.await_inplace:
            self._worker_stop = asyncio.Event()
            self._worker_task = asyncio.create_task(
                worker.run(self._worker_stop, manage_broker=False), name="conveyor-inmemory-worker"
            )

    def _abandon_worker(self) -> None:
        """Drop the worker of an event loop that is gone; its messages' leases run out and they
        are delivered again to the new one."""
        if self._worker is not None:
            self._worker.close_pools()
        self._worker = self._worker_stop = self._worker_task = None

    async def shutdown(self) -> None:
        """Let running tasks finish, then stop."""
        if self._worker_loop_ended():
            self._abandon_worker()
        elif self._loop is asyncio.get_running_loop():
            await self._drain_worker()
        elif self._loop is not None:  # the worker runs in another thread's loop: stop it there
            drained = asyncio.run_coroutine_threadsafe(self._drain_worker(), self._loop)
            await asyncio.wrap_future(drained)
        self._worker = self._worker_stop = self._worker_task = None
        await super().shutdown()

    async def _drain_worker(self) -> None:
        if self._worker_stop is not None and self._worker_task is not None:
            self._worker_stop.set()
            await self._worker_task

    async def publish(self, outgoing: list[Outgoing]) -> None:
        """Queue the messages, or with `await_inplace` run them before returning."""
        if not self.await_inplace:
            await super().publish(outgoing)
            return
        from conveyor.worker.runner import Run

        for out in outgoing:
            run = self._inplace.handle(Run(Delivery(out.task_id, out.queue, out.body)))
            await asyncio.create_task(run)  # its own stack: a long chain run in place nests none


class SqliteBroker(Broker):
    """The embedded default: queues, state and results in one SQLite file, shared by many
    processes.

    Args:
        path: the database file (created if missing).
        lease_seconds: how long a worker holds a message without renewing; after a crash the
            message is delivered again within about this long.
        url: `sqlite:///relative.db` or `sqlite:////absolute/path.db` instead of `path`
            (query option `lease`).
        **options: `Broker` options (serializer, task_id_generator, secret_key, ...).
    """

    def __init__(
        self,
        path: str = "conveyor.db",
        *,
        lease_seconds: float | None = None,
        url: str | None = None,
        **options: Any,
    ) -> None:
        engine = registry.open_url(
            url or "sqlite://", path=None if url else path, lease_seconds=lease_seconds
        )
        super().__init__(engine, **options)
        self.path: str = getattr(engine.transport, "path", path)


class RedisBroker(Broker):
    """The production engine: queues on Redis Streams, state and results in the same Redis.

    Args:
        url: `redis://[:password@]host:port/db`, `rediss://...` (TLS), `unix://path`,
            `redis+sentinel://host:26379[,host:port]/service/db` or `redis+cluster://host:port`;
            query options `prefix` and `lease`.
        prefix: namespace of every key, so several apps can share one Redis.
        lease_seconds: how long a worker holds a message without renewing; after a crash the
            message is delivered again about this long after the last renewal.
        result_ttl: seconds results are kept when a task sets no `result_ttl`.
        **options: `Broker` options (serializer, task_id_generator, secret_key, ...).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "conveyor",
        lease_seconds: float | None = None,
        result_ttl: float | None = _DAY,
        **options: Any,
    ) -> None:
        engine = registry.open_url(
            url, prefix=prefix, lease_seconds=lease_seconds, result_ttl=result_ttl
        )
        super().__init__(engine, **options)
        self.url = split_options(url)[0]  # without conveyor's own options


class PostgresBroker(Broker):
    """PostgreSQL: queues, state and results in tables of one schema of your database, and
    transactional enqueue (`task.kicker().with_connection(conn).kiq(...)`).

    Args:
        url: `postgresql://user:password@host:5432/db` (or `postgres://`); query options
            `schema` and `lease`, the others go to asyncpg (e.g. `sslmode`).
        schema: the schema conveyor creates its tables in, beside your own.
        lease_seconds: how long a worker holds a message without renewing; a crashed worker's
            messages are delivered again about this long after its last renewal.
        result_ttl: seconds results are kept when a task sets no `result_ttl`.
        **options: `Broker` options (serializer, task_id_generator, secret_key, ...).
    """

    def __init__(
        self,
        url: str = "postgresql://localhost:5432/postgres",
        *,
        schema: str = "conveyor",
        lease_seconds: float | None = None,
        result_ttl: float | None = _DAY,
        **options: Any,
    ) -> None:
        engine = registry.open_url(
            url, schema=schema, lease_seconds=lease_seconds, result_ttl=result_ttl
        )
        super().__init__(engine, **options)
        self.url = split_options(url, ("schema", "lease"))[0]


class NatsBroker(Broker):
    """NATS JetStream: work-queue streams, durable pull consumers, state and results in
    JetStream.

    Args:
        url: `nats://[user:password@]host:4222` (several separated by commas); query options
            `prefix` and `lease`.
        prefix: the start of every stream name and subject, so several apps share one server.
        lease_seconds: the consumers' `ack_wait`; a crashed worker's messages are delivered
            again about this long after its last renewal.
        result_ttl: seconds results are kept when a task sets no `result_ttl`.
        **options: `Broker` options (serializer, task_id_generator, secret_key, ...).
    """

    def __init__(
        self,
        url: str = "nats://localhost:4222",
        *,
        prefix: str = "conveyor",
        lease_seconds: float | None = None,
        result_ttl: float | None = _DAY,
        **options: Any,
    ) -> None:
        engine = registry.open_url(
            url, prefix=prefix, lease_seconds=lease_seconds, result_ttl=result_ttl
        )
        super().__init__(engine, **options)
        self.url = split_options(url)[0]  # without conveyor's own options


class AmqpBroker(Broker):
    """RabbitMQ: durable priority queues, publisher confirms, acks after the result is stored.

    RabbitMQ keeps messages only, so the shared state lives in the state store `state_url`
    names; see `docs/engines/amqp.md`.

    Args:
        url: `amqp://user:password@host:5672/vhost` or `amqps://...`; query options `prefix`,
            `lease` and `state` (a URL-encoded state URL).
        prefix: prefix of every queue and exchange, so several apps share a vhost.
        state_url: `redis://...` or `sqlite:///state.db`; this process's memory when None.
        lease_seconds: how long a worker holds a message without renewing.
        result_backend: where results go; by default the state store's engine (Redis or SQLite),
            else this process's memory.
        **options: `Broker` options (serializer, task_id_generator, secret_key, ...).
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        prefix: str = "conveyor",
        state_url: str | None = None,
        lease_seconds: float | None = None,
        result_backend: ResultBackend | None = None,
        **options: Any,
    ) -> None:
        engine = registry.open_url(
            url, state_url=state_url, prefix=prefix, lease_seconds=lease_seconds
        )
        super().__init__(_with_results(engine, result_backend), **options)
        self.url: str = getattr(engine.transport, "url", url)


class ZeroMQBroker(Broker):
    """ZeroMQ, fire-and-forget: the sender binds a PUSH socket, workers connect PULL sockets.

    Nothing is durable: see `docs/engines/zmq.md` for what it does not guarantee.

    Args:
        zmq_pub_host: where the sending process binds (the seed's name).
        zmq_sub_host: where workers connect to it.
        result_backend: where results go; by default the state store's engine, else memory.
        task_id_generator: makes task ids.
        state_url: shared state (`redis://...`, `sqlite:///state.db`); memory when None.
        url: `zmq://host:port[?state=...]` instead of the two hosts: the sender binds every
            interface on the port, workers connect to host:port.
        **options: `Broker` options.
    """

    def __init__(
        self,
        zmq_pub_host: str = "tcp://0.0.0.0:5555",
        zmq_sub_host: str = "tcp://localhost:5555",
        result_backend: ResultBackend | None = None,
        task_id_generator: Callable[[], str] | None = None,
        *,
        state_url: str | None = None,
        url: str | None = None,
        **options: Any,
    ) -> None:
        engine = registry.open_url(
            url or "zmq://",
            state_url=state_url,
            zmq_pub_host=None if url else zmq_pub_host,
            zmq_sub_host=None if url else zmq_sub_host,
        )
        super().__init__(
            _with_results(engine, result_backend), task_id_generator=task_id_generator, **options
        )


def _with_results(engine: Engine, results: ResultBackend | None) -> Engine:
    return engine if results is None else Engine(engine.transport, engine.store, results)


_FROM_URL: dict[str, Callable[..., Broker]] = {
    "memory": lambda url, **options: InMemoryBroker(**options),
    "sqlite": lambda url, **options: SqliteBroker(url=url, **options),
    "redis": RedisBroker,
    "postgres": PostgresBroker,
    "nats": NatsBroker,
    "amqp": AmqpBroker,
    "zmq": lambda url, **options: ZeroMQBroker(url=url, **options),
}


def broker_from_url(url: str | None = None, **options: Any) -> Broker:
    """Make the broker a URL names: `CONVEYOR_BROKER_URL`, else the embedded SQLite default.

    `memory://` and `sqlite:///file.db` (query option `lease`) are built in; Redis URLs
    (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://`, query options
    `prefix` and `lease`) need the `redis` extra; `amqp://` / `amqps://` (options `prefix`,
    `lease`, `state`) the `amqp` extra; `postgresql://` / `postgres://` (options `schema`,
    `lease`) the `postgres` extra; `nats://` (options `prefix`, `lease`) the `nats`
    extra; `zmq://host:port` (option `state`) the `zmq` extra. A result store from
    `CONVEYOR_RESULT_BACKEND_URL` replaces the engine's default.

    Raises:
        ConfigurationError: the scheme is unknown or the URL is malformed.
        ImportError: the engine's extra is not installed (the message names it).
    """
    url = url or os.environ.get("CONVEYOR_BROKER_URL") or DEFAULT_URL
    broker = _FROM_URL[registry.engine_name(url, "broker")](url, **options)
    results_url = os.environ.get("CONVEYOR_RESULT_BACKEND_URL")
    if results_url:
        broker.with_result_backend(registry.results_from_url(results_url))
    return broker
