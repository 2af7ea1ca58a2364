"""What checking arguments on send costs `kiq` (issue 19): CPU microseconds per awaited send.

    .venv/bin/python -m bench.kiq_checks [--count N] [--reps R] [--redis]

Sends `--count` calls one awaited `kiq` at a time, for three tasks: no parameters (the
benchmark's no-op), two `int`s (the common call: a value of exactly its annotated type is not
converted), and a dataclass, a datetime and a `list[str]` given as JSON-like values (each
converted once by `msgspec.convert`). Nothing consumes the messages. The broker is the in-memory
engine (the send path alone, where a cost would show most) and, with `--redis`, a private
`redis-server` on a free port (one round trip per send, as in `bench/run`).

An A/B in one process: each repetition measures every task with the check on and off
(`cast_types=False` skips it, and changes nothing else on the send path), in alternating order,
so the machine's drift hits both alike. Prints the median of `--reps` repetitions of each and
their ratio (bench/NOTES.md, session 10).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor import Broker, RedisBroker
from conveyor.brokers import Broker as EngineBroker
from conveyor.engines import registry

WHEN = datetime(2030, 1, 1, tzinfo=UTC).isoformat()


@dataclass
class Point:
    """A dataclass parameter: sent as a dict, converted to check it."""

    x: int
    y: int


def register(broker: Broker) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """The three tasks, each with the arguments every send gives it."""

    @broker.task
    async def noop() -> None: ...

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    @broker.task
    async def place(p: Point, when: datetime, tags: list[str]) -> None: ...

    return {
        "noop()": (noop, ()),
        "add(int, int)": (add, (1, 2)),
        "place(Point, datetime, list[str])": (place, ({"x": 1, "y": 2}, WHEN, ["a", "b"])),
    }


async def cost(broker: Broker, task: Any, args: tuple[Any, ...], count: int) -> float:
    """Microseconds of this process's CPU per awaited single send (the queue emptied after).

    CPU time, not wall time: other processes on a shared machine do not count, and it is what
    the check adds (the round trip to a server is the same with and without it)."""
    start = time.process_time()
    for _ in range(count):
        await task.kiq(*args)
    took = time.process_time() - start
    await broker.transport.purge(None)
    return took / count * 1e6


async def measure(broker: Broker, count: int, reps: int) -> dict[str, list[float]]:
    """Per task: the median CPU per send with the check, without it, and the median and the
    quartiles of the per-repetition ratio (checked / unchecked, measured back to back)."""
    tasks = register(broker)
    found: dict[str, dict[bool, list[float]]] = {name: {True: [], False: []} for name in tasks}
    async with broker:
        for task, args in tasks.values():  # warm up: connections, msgspec's type cache
            await cost(broker, task, args, min(count, 500))
        for rep in range(reps):
            for name, (task, args) in tasks.items():
                for checked in (True, False) if rep % 2 else (False, True):
                    broker.cast_types = checked
                    found[name][checked].append(await cost(broker, task, args, count))
    summary = {}
    for name, rates in found.items():
        ratios = [a / b for a, b in zip(rates[True], rates[False], strict=True)]
        low, mid, high = statistics.quantiles(ratios, n=4)
        summary[name] = [statistics.median(rates[True]), statistics.median(rates[False])]
        summary[name] += [mid, low, high]
    return summary


def main() -> None:
    """Parse the options, measure, print one line per engine and task."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--reps", type=int, default=31)
    parser.add_argument("--redis", action="store_true", help="also on a private redis-server")
    options = parser.parse_args()
    memory = EngineBroker(registry.open_url("memory://"))
    results = {"memory": asyncio.run(measure(memory, options.count, options.reps))}
    if options.redis:
        from bench.servers import RedisServer

        with RedisServer() as server:
            redis = RedisBroker(server.url(0))
            results["redis"] = asyncio.run(measure(redis, options.count // 4, options.reps))
    print(f"{'engine':<7} {'task':<34} {'checked':>9} {'unchecked':>9}  ratio (quartiles)")
    for engine, costs in results.items():
        for name, (checked, unchecked, ratio, low, high) in costs.items():
            print(
                f"{engine:<7} {name:<34} {checked:>6.2f} us {unchecked:>6.2f} us"
                f"  {ratio:.3f} ({low:.3f}-{high:.3f})"
            )


if __name__ == "__main__":
    main()
