"""The RabbitMQ and NATS groups' machine reference, measured in the same run with the bare
clients every peer of the group builds on: what one confirmed publish and one hop cost here,
below any task queue.

- `publish`: one persistent message at a time, each awaited until the server confirmed it
  (RabbitMQ: aiormq with publisher confirms into a durable queue; NATS: nats-py's JetStream
  publish, answered once the stream stored it). No awaited single send of a queue that waits
  for the same confirm can be faster: the ceiling under the single-`kiq` figure.
- the latency floor of scenario (d): this process publishes `time.time()` at the scenario's
  rate, as above, and a second process takes the difference on arrival (RabbitMQ: an aiormq
  `basic.consume`; NATS: a pull consumer's long poll, as conveyor and taskiq-nats read): the
  hop with the usual client and nothing else (a leaner client can come in under it).

RabbitMQ is the machine's shared server: the queue is `<run prefix>_reference`, deleted by
name when the measurement ends. NATS is the run's private server: the stream is
`bench_reference`, deleted likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench.scenarios import percentile

__all__ = ["floor_medians", "measure", "render"]

_STREAM = "bench_reference"
_SUBJECT = "bench.reference"
#: What each broker's reference is called in the report, and how its client is named.
_TITLES = {
    "amqp": ("RabbitMQ reference", "aiormq", "a persistent publish and its confirm"),
    "nats": ("NATS reference", "nats-py", "a JetStream publish and its ack"),
}

Publish = Callable[[bytes], Awaitable[None]]


def measure(
    engine: str, url: str, queue: str, count: int, latency: int, rate: float
) -> dict[str, Any]:
    """rps and p50 (ms) of `publish`, and the latency floor, on `engine` ("amqp" or "nats");
    or {"error": why}. `queue` names RabbitMQ's queue (NATS's stream is fixed)."""
    try:
        out: dict[str, Any] = {"publish": asyncio.run(_publish_rate(engine, url, queue, count))}
    except Exception as exc:
        return {"error": f"publishing failed: {type(exc).__name__}: {exc}"}
    out["floor"] = _latency_floor(engine, url, queue, latency, rate)
    return out


@contextlib.asynccontextmanager
async def _publisher(engine: str, url: str, queue: str) -> AsyncIterator[Publish]:
    """A fresh queue (stream) and a function that publishes to it and waits for its confirm;
    the queue is deleted on the way out."""
    if engine == "amqp":
        import aiormq

        connection = await aiormq.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.queue_delete(queue)
            await channel.queue_declare(queue, durable=True)
            persistent = aiormq.spec.Basic.Properties(delivery_mode=2)

            async def publish_amqp(body: bytes) -> None:
                await channel.basic_publish(body, routing_key=queue, properties=persistent)

            try:
                yield publish_amqp
            finally:
                await channel.queue_delete(queue)
        finally:
            await connection.close()
        return
    import nats
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(_STREAM)
        config = StreamConfig(name=_STREAM, subjects=[_SUBJECT], storage=StorageType.FILE)
        await js.add_stream(config)

        async def publish_nats(body: bytes) -> None:
            await js.publish(_SUBJECT, body, timeout=5)

        try:
            yield publish_nats
        finally:
            await js.delete_stream(_STREAM)
    finally:
        await nc.close()


async def _publish_rate(engine: str, url: str, queue: str, count: int) -> dict[str, float]:
    async with _publisher(engine, url, queue) as publish:
        times = []
        start = time.perf_counter()
        for _ in range(count):
            before = time.perf_counter()
            await publish(b"x")
            times.append((time.perf_counter() - before) * 1000)
        rps = count / (time.perf_counter() - start)
    return {"rps": rps, "p50_ms": percentile(sorted(times), 50)}


def _latency_floor(engine: str, url: str, queue: str, count: int, rate: float) -> dict[str, Any]:
    """p50 and p99 (ms) of scenario (d) with the bare clients, or {"error": why}."""
    try:
        delays = sorted(asyncio.run(_send_at_rate(engine, url, queue, count, rate)))
    except Exception as exc:
        return {"error": f"the latency floor failed: {type(exc).__name__}: {exc}"}
    if len(delays) != count:
        return {"error": f"the floor's consumer saw {len(delays)} of {count} messages"}
    return {"p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99)}


async def _send_at_rate(engine: str, url: str, queue: str, count: int, rate: float) -> Any:
    """Publish `count` send times at `rate` to a consumer process; its delays (ms)."""
    async with _publisher(engine, url, queue) as publish:
        argv = ["-m", "bench.broker_reference", engine, url, queue, str(count)]
        consumer = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert consumer.stdout is not None
            if (await consumer.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the floor's consumer did not start")
            start = time.perf_counter()
            for i in range(count):
                pause = start + i / rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                await publish(repr(time.time()).encode())
            out = await asyncio.wait_for(consumer.stdout.read(), 30)
            await asyncio.wait_for(consumer.wait(), 10)
            return json.loads(out)
        finally:
            if consumer.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    consumer.kill()
                await consumer.wait()


async def _consume(engine: str, url: str, queue: str, count: int) -> None:
    """The floor's consumer: print "ready", then the delays (ms) of `count` messages."""
    delays: list[float] = []
    deadline = time.monotonic() + 60 + count
    if engine == "amqp":
        import aiormq

        connection = await aiormq.connect(url)
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=100)
        done = asyncio.Event()

        async def arrived(message: aiormq.abc.DeliveredMessage) -> None:
            delays.append((time.time() - float(message.body)) * 1000)
            assert message.delivery_tag is not None  # set on every basic.deliver
            await message.channel.basic_ack(message.delivery_tag)
            if len(delays) >= count:
                done.set()

        await channel.basic_consume(queue, arrived)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), deadline - time.monotonic())
        await connection.close()
    else:
        import nats
        from nats.errors import TimeoutError as NoMessage

        nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=1)
        subscription = await nc.jetstream().pull_subscribe(_SUBJECT, "floor", stream=_STREAM)
        print("ready", flush=True)
        while len(delays) < count and time.monotonic() < deadline:
            with contextlib.suppress(NoMessage):
                for message in await subscription.fetch(1, timeout=1):
                    delays.append((time.time() - float(message.data)) * 1000)
                    await message.ack()
        await nc.close()
    print(json.dumps(delays), flush=True)


def floor_medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    """The reference's medians over the repetitions, by the metric key each bounds (the
    latency floor and the single-send ceiling); empty if not measured."""
    good = [s for s in samples if "error" not in s]
    out: dict[str, float] = {}
    if good:
        out["enqueue_single"] = statistics.median(s["publish"]["rps"] for s in good)
    floors = [s["floor"] for s in good if "p50_ms" in s["floor"]]
    if floors:
        out["latency_p50"] = statistics.median(f["p50_ms"] for f in floors)
        out["latency_p99"] = statistics.median(f["p99_ms"] for f in floors)
    return out


def render(engine: str, samples: list[dict[str, Any]]) -> str:
    """The medians over the repetitions, on two lines."""
    title, client, what = _TITLES[engine]
    good = [s for s in samples if "error" not in s]
    if not good:
        return f"{title}: {samples[0]['error'] if samples else 'not measured'}"
    medians = floor_medians(good)
    p50 = statistics.median(s["publish"]["p50_ms"] for s in good)
    reader = "a basic.consume" if engine == "amqp" else "a pull consumer's long poll"
    floor = (
        f"Latency floor of (d) with no task queue ({client} publish to {reader} in another "
        f"process): p50 {medians['latency_p50']:.2f} ms, p99 {medians['latency_p99']:.2f} ms."
        if "latency_p50" in medians
        else next((f"Latency floor: {s['floor']['error']}" for s in good), "")
    )
    return (
        f"{title} ({client}, one connection, median of {len(good)}): {what}, one at a time, "
        f"{medians['enqueue_single']:,.0f}/s (p50 {p50:.3f} ms).\n{floor}"
    )


if __name__ == "__main__":  # the floor's consumer process: engine, URL, queue and count
    asyncio.run(_consume(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
