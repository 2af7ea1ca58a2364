"""The shared RabbitMQ of the RabbitMQ group: its URL, this run's name prefix, and the deletion
of exactly the queues and exchanges a peer declared under that prefix.

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
from collections.abc import Iterable

__all__ = ["drop", "prefix", "url"]


def url() -> str:
    """The RabbitMQ server's URL."""
    return os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def prefix(server_url: str) -> str:
    """This run's prefix for names on the shared servers (one per harness Redis)."""
    return "bench" + hashlib.sha1(server_url.encode()).hexdigest()[:10]


def drop(queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
    """Delete `queues` and `exchanges` (those that exist), on a loop of a thread of its own
    (an adapter's `reset` may be called while the driver's loop runs)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_drop(list(queues), list(exchanges)))
        except BaseException as exc:  # reported in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def _drop(queues: list[str], exchanges: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(url(), timeout=5)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)
    finally:
        await connection.close()
