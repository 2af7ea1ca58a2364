"""The public broker classes, each binding a transport and a result store, and `broker_from_url`.

Engines that need an optional package are imported only when their URL or class is used.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from conveyor._urls import safe_url, split_options
from conveyor.broker import Broker
from conveyor.errors import ConfigurationError
from conveyor.results.base import ResultBackend
from conveyor.results.memory import MemoryResultBackend
from conveyor.results.sqlite import SqliteResultBackend
from conveyor.transports.base import Delivery, Outgoing
from conveyor.transports.memory import MemoryTransport
from conveyor.transports.sqlite import SqliteTransport

__all__ = [
    "DEFAULT_URL",
    "AmqpBroker",
    "InMemoryBroker",
    "NatsBroker",
    "RedisBroker",
    "SqliteBroker",
    "ZeroMQBroker",
    "broker_from_url",
    "result_backend_from_url",
    "safe_url",
]

DEFAULT_URL = "sqlite:///conveyor.db"
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")


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
        super().__init__(
            MemoryTransport(),
            result_backend or MemoryResultBackend(max_stored_results=max_stored_results),
            cast_types=cast_types,
            task_id_generator=task_id_generator,
            **options,
        )
        self.await_inplace = await_inplace
        self._pool_size = sync_tasks_pool_size
        self._max_async_tasks = max_async_tasks
        self._worker_stop: asyncio.Event | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._inplace: Any = None

    async def startup(self) -> None:
        """Start the broker and its in-process worker."""
        if self._started:
            return
        await super().startup()
        from conveyor.worker.consumer import Worker, WorkerOptions

        options = WorkerOptions(
            max_async_tasks=self._max_async_tasks,
            max_threads=self._pool_size,
            receive_timeout=0.2,
            queues=(),  # every queue
        )
        worker = Worker(self, options)
        self._inplace = worker.runner
        if not self.await_inplace:
            self._worker_stop = asyncio.Event()
            self._worker_task = asyncio.create_task(
                worker.run(self._worker_stop, manage_broker=False), name="conveyor-inmemory-worker"
            )

    async def shutdown(self) -> None:
        """Let running tasks finish, then stop."""
        if self._worker_stop is not None and self._worker_task is not None:
            self._worker_stop.set()
            await self._worker_task
            self._worker_stop = self._worker_task = None
        await super().shutdown()

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
    """The embedded default: queues and results in one SQLite file, shared by many processes.

    Args:
        path: the database file (created if missing).
        lease_seconds: how long a worker holds a message without renewing; after a crash the
            message is delivered again within about this long.
        **options: `Broker` options (serializer, task_id_generator, secret_key, ...).
    """

    def __init__(self, path: str = "conveyor.db", *, lease_seconds: float = 10.0, **options: Any):
        super().__init__(
            SqliteTransport(path, lease_seconds=lease_seconds),
            SqliteResultBackend(path),
            **options,
        )
        self.path = path


class RedisBroker(Broker):
    """The production engine: queues on Redis Streams, results in the same Redis.

    Args:
        url: `redis://[:password@]host:port/db`, `rediss://...` (TLS), `unix://path`,
            `redis+sentinel://host:26379[,host:port]/service/db` or `redis+cluster://host:port`.
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
        lease_seconds: float = 30.0,
        result_ttl: float | None = 24 * 3600.0,
        **options: Any,
    ) -> None:
        from conveyor.results.redis import RedisResultBackend
        from conveyor.transports._redis_client import RedisClient
        from conveyor.transports.redis import RedisTransport

        url, query = split_options(url)
        prefix = query.get("prefix") or prefix
        lease = _float_option(query, "lease", url)
        client = RedisClient(url, prefix)
        super().__init__(
            RedisTransport(url, lease_seconds=lease or lease_seconds, client=client),
            RedisResultBackend(url, result_ttl=result_ttl, client=client),
            **options,
        )
        self.url = url


class NatsBroker(Broker):
    """NATS JetStream: work-queue streams, durable pull consumers, results in JetStream.

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
        lease_seconds: float = 30.0,
        result_ttl: float | None = 24 * 3600.0,
        **options: Any,
    ) -> None:
        from conveyor.results.nats import NatsResultBackend
        from conveyor.transports._nats_client import NatsClient
        from conveyor.transports.nats import NatsTransport

        url, query = split_options(url)
        prefix = query.get("prefix") or prefix
        lease = _float_option(query, "lease", url)
        client = NatsClient(url, prefix)
        super().__init__(
            NatsTransport(url, lease_seconds=lease or lease_seconds, client=client),
            NatsResultBackend(url, result_ttl=result_ttl, client=client),
            **options,
        )
        self.url = url


class AmqpBroker(Broker):
    """RabbitMQ: durable priority queues, publisher confirms, acks after the result is stored.

    RabbitMQ keeps messages only, so task states, cancels, dedup, rate limits and the other
    shared state live in a state store (`state_url`); see `docs/engines/amqp.md`.

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
        lease_seconds: float = 30.0,
        result_backend: ResultBackend | None = None,
        **options: Any,
    ) -> None:
        from conveyor.transports.amqp import AmqpTransport

        transport = AmqpTransport(
            url, prefix=prefix, state_url=state_url, lease_seconds=lease_seconds
        )
        super().__init__(transport, result_backend or _beside(transport.state_url), **options)
        self.url = transport.url


class ZeroMQBroker(Broker):
    """ZeroMQ, fire-and-forget: the sender binds a PUSH socket, workers connect PULL sockets.

    Nothing is durable: see `docs/engines/zmq.md` for what it does not guarantee.

    Args:
        zmq_pub_host: where the sending process binds (the seed's name).
        zmq_sub_host: where workers connect to it.
        result_backend: where results go; by default the state store's engine, else memory.
        task_id_generator: makes task ids.
        state_url: shared state (`redis://...`, `sqlite:///state.db`); memory when None.
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
        **options: Any,
    ) -> None:
        from conveyor.transports.zmq import ZmqTransport

        transport = ZmqTransport(zmq_pub_host, zmq_sub_host, state_url=state_url)
        super().__init__(
            transport,
            result_backend or _beside(state_url),
            task_id_generator=task_id_generator,
            **options,
        )


def _beside(state_url: str | None) -> ResultBackend:
    """Results in the state store's engine, or in memory without one."""
    if state_url is None:
        return MemoryResultBackend()
    return result_backend_from_url(state_url)


def _sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"{safe_url(url)!r} names a host: use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"{url!r} names no file: use sqlite:///conveyor.db")
    return path, dict(parse_qsl(parts.query))


def broker_from_url(url: str | None = None, **options: Any) -> Broker:
    """Make the broker a URL names: `CONVEYOR_BROKER_URL`, else the embedded SQLite default.

    `memory://` and `sqlite:///file.db` (query option `lease`) are built in; Redis URLs
    (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://`, query options
    `prefix` and `lease`) need the `redis` extra; `amqp://` / `amqps://` (options `prefix`,
    `lease`, `state`) the `amqp` extra; `nats://` (options `prefix`, `lease`) the `nats`
    extra; `zmq://host:port` (option `state`) the `zmq` extra.
    A result store from
    `CONVEYOR_RESULT_BACKEND_URL` replaces the engine's default.

    Raises:
        ConfigurationError: the scheme is unknown or the URL is malformed.
    """
    url = url or os.environ.get("CONVEYOR_BROKER_URL") or DEFAULT_URL
    scheme = urlsplit(url).scheme
    broker: Broker
    if scheme == "memory":
        broker = InMemoryBroker(**options)
    elif scheme == "sqlite":
        path, query = _sqlite_path(url)
        lease = _float_option(query, "lease", url)
        broker = SqliteBroker(path, **({"lease_seconds": lease} if lease else {}), **options)
    elif scheme in _REDIS_SCHEMES:
        broker = RedisBroker(url, **options)
    elif scheme == "nats":
        broker = NatsBroker(url, **options)
    elif scheme in ("amqp", "amqps"):
        broker = AmqpBroker(url, **options)
    elif scheme == "zmq":
        broker = _zmq_from_url(url, **options)
    else:
        raise ConfigurationError(
            f"unknown broker URL scheme in {safe_url(url)!r}: use sqlite:///file.db,"
            " redis://host:port/db, amqp://host:5672/, nats://host:4222, zmq://host:5555"
            " or memory://"
        )
    results_url = os.environ.get("CONVEYOR_RESULT_BACKEND_URL")
    if results_url:
        broker.with_result_backend(result_backend_from_url(results_url))
    return broker


def _zmq_from_url(url: str, **options: Any) -> Broker:
    """`zmq://host:port?state=...`: the sender binds every interface on the port, workers
    connect to host:port."""
    parts = urlsplit(url)
    if parts.port is None:
        raise ConfigurationError(f"{safe_url(url)!r} names no port: use zmq://host:5555")
    query = dict(parse_qsl(parts.query))
    return ZeroMQBroker(
        f"tcp://0.0.0.0:{parts.port}",
        f"tcp://{parts.hostname or 'localhost'}:{parts.port}",
        state_url=query.get("state"),
        **options,
    )


def result_backend_from_url(url: str) -> ResultBackend:
    """Make the result store a URL names (`memory://`, `sqlite:///file.db`, Redis, `nats://`)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryResultBackend()
    if scheme == "sqlite":
        return SqliteResultBackend(_sqlite_path(url)[0])
    if scheme in _REDIS_SCHEMES:
        from conveyor.results.redis import RedisResultBackend

        plain, query = split_options(url)
        return RedisResultBackend(plain, prefix=query.get("prefix") or "conveyor")
    if scheme == "nats":
        from conveyor.results.nats import NatsResultBackend

        plain, query = split_options(url)
        return NatsResultBackend(plain, prefix=query.get("prefix") or "conveyor")
    raise ConfigurationError(f"unknown result backend URL scheme in {safe_url(url)!r}")


def _float_option(query: dict[str, str], name: str, url: str) -> float | None:
    if name not in query:
        return None
    try:
        return float(query[name])
    except ValueError:
        raise ConfigurationError(
            f"{name}={query[name]!r} in {safe_url(url)!r} is not a number"
        ) from None
