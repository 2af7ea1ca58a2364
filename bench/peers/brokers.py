"""The message brokers of the RabbitMQ and NATS groups: their URLs, this run's name prefix, and
the deletion of exactly the queues, exchanges and streams a variant declared.

NATS is the harness's private `nats-server` (`BENCH_NATS_URL`, set by the harness).

The machine's RabbitMQ (`BENCH_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/`) is
shared with other programs, so every variant names its queues and exchanges `<prefix>_<library>`
(the prefix is made from the harness's private Redis URL, so it is this run's) and deletes
only those, by name, before and after each session. Nothing else on the server is touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

__all__ = ["amqp_url", "drop_amqp", "drop_nats", "in_thread", "nats_url", "prefix"]


def amqp_url() -> str:
    """The RabbitMQ server's URL."""
    return os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def nats_url() -> str:
    """The NATS server's URL (the harness's private one while the NATS group runs)."""
    return os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")


def prefix(server_url: str) -> str:
    """This run's prefix for names on the shared servers (one per harness Redis)."""
    return "bench" + hashlib.sha1(server_url.encode()).hexdigest()[:10]


def in_thread(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to its end on a loop of a thread of its own (an adapter's `reset` may
    be called while the driver's loop runs)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:  # reported in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def drop_amqp(queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
    """Delete `queues` and `exchanges` on RabbitMQ (those that exist)."""
    in_thread(lambda: _drop_amqp(list(queues), list(exchanges)))


async def _drop_amqp(queues: list[str], exchanges: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url(), timeout=5)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)
    finally:
        await connection.close()


def drop_nats(stream_prefix: str) -> None:
    """Delete the JetStream streams whose names start with `stream_prefix`."""
    in_thread(lambda: _drop_nats(stream_prefix))


async def _drop_nats(stream_prefix: str) -> None:
    import json

    import nats

    nc = await nats.connect(nats_url(), connect_timeout=3, max_reconnect_attempts=1)
    try:
        reply = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)
        for name in json.loads(reply.data).get("streams") or []:
            if name.startswith(stream_prefix):
                await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)
    finally:
        await nc.close()
