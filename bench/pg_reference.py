"""The PostgreSQL group's machine reference, measured in the same run on the private server with
bare asyncpg: what a round trip, a commit and a notification cost here, below any task queue.

- `select`: `SELECT 1` one at a time (a round trip);
- `insert`: a one-row INSERT per transaction, one at a time (a round trip and a WAL flush: the
  floor under every awaited single send of a PostgreSQL queue, with fsync on);
- the latency floor of scenario (d): this process sends `SELECT pg_notify(channel, time)` at the
  scenario's rate, and a second process LISTENing takes the difference on arrival (p50, p99).
  A queue that wakes its workers with NOTIFY cannot start a task sooner than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.protocol import Counts
    from bench.servers import PostgresServer

__all__ = ["floor_medians", "measure", "render"]

_CHANNEL = "bench_reference"


def measure(pg: PostgresServer, counts: Counts) -> dict[str, Any]:
    """rps and p50 (ms) of `select` and `insert`, and the NOTIFY latency floor; or
    {"error": why}."""
    try:
        out = asyncio.run(_round_trips(pg.url(), counts.reference))
    except Exception as exc:
        return {"error": f"round trips failed: {type(exc).__name__}: {exc}"}
    out["floor"] = latency_floor(pg.url(), counts.latency, counts.latency_rate)
    return out


async def _round_trips(url: str, count: int) -> dict[str, Any]:
    import asyncpg

    from bench.scenarios import percentile

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE bench_reference (id bigserial PRIMARY KEY, v text)")
        out = {}
        for name, statement in (
            ("select", "SELECT 1"),
            ("insert", "INSERT INTO bench_reference (v) VALUES ('x')"),
        ):
            times = []
            start = time.perf_counter()
            for _ in range(count):
                before = time.perf_counter()
                await conn.execute(statement)
                times.append((time.perf_counter() - before) * 1000)
            rps = count / (time.perf_counter() - start)
            out[name] = {"rps": rps, "p50_ms": percentile(sorted(times), 50)}
        await conn.execute("DROP TABLE bench_reference")
        return out
    finally:
        await conn.close()


def latency_floor(url: str, count: int, rate: float) -> dict[str, Any]:
    """p50 and p99 (ms) of NOTIFY to a LISTENing asyncpg connection in another process."""
    from bench.scenarios import percentile

    listener = subprocess.Popen(
        [sys.executable, "-m", "bench.pg_reference", url, str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "ready":
            return {"error": "the floor's listener did not start"}
        asyncio.run(_notify(url, count, rate))
        line = listener.communicate(timeout=30)[0]
        delays = sorted(json.loads(line))
    except Exception as exc:
        return {"error": f"the latency floor failed: {type(exc).__name__}: {exc}"}
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    if len(delays) != count:
        return {"error": f"the floor's listener saw {len(delays)} of {count} notifications"}
    return {"p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99)}


async def _notify(url: str, count: int, rate: float) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        start = time.perf_counter()
        for i in range(count):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            await conn.execute(f"SELECT pg_notify('{_CHANNEL}', '{time.time()!r}')")
    finally:
        await conn.close()


async def _listen(url: str, count: int) -> None:
    """The floor's listener: print "ready", then the delays (ms) of `count` notifications."""
    import asyncpg

    conn = await asyncpg.connect(url)
    delays: list[float] = []
    done = asyncio.Event()

    def arrived(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        delays.append((time.time() - float(payload)) * 1000)
        if len(delays) >= count:
            done.set()

    await conn.add_listener(_CHANNEL, arrived)
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 60 + count)
    print(json.dumps(delays), flush=True)
    await conn.close()


def floor_medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    """The NOTIFY floor's medians over the repetitions, by metric key; empty if not measured."""
    floors = [s["floor"] for s in samples if "p50_ms" in s.get("floor", {})]
    if not floors:
        return {}
    return {
        "latency_p50": statistics.median(f["p50_ms"] for f in floors),
        "latency_p99": statistics.median(f["p99_ms"] for f in floors),
    }


def render(samples: list[dict[str, Any]]) -> str:
    """The medians over the repetitions, on two lines."""
    good = [s for s in samples if "error" not in s]
    if not good:
        why = samples[0]["error"] if samples else "not measured"
        return f"PostgreSQL reference: {why}"

    def median(name: str, field: str) -> float:
        return float(statistics.median(s[name][field] for s in good))

    floors = floor_medians(good)
    floor = (
        f"Latency floor of (d) with no task queue (asyncpg NOTIFY to an asyncpg LISTEN in "
        f"another process): p50 {floors['latency_p50']:.2f} ms, p99 {floors['latency_p99']:.2f} ms."
        if floors
        else next((f"Latency floor: {s['floor']['error']}" for s in good if "floor" in s), "")
    )
    return (
        f"PostgreSQL reference (asyncpg, one connection, median of {len(good)}): SELECT 1 "
        f"{median('select', 'rps'):,.0f}/s (p50 {median('select', 'p50_ms'):.3f} ms), one-row "
        f"INSERT and commit {median('insert', 'rps'):,.0f}/s (p50 "
        f"{median('insert', 'p50_ms'):.3f} ms) one at a time.\n{floor}"
    )


if __name__ == "__main__":  # the floor's listener process: URL and count
    asyncio.run(_listen(sys.argv[1], int(sys.argv[2])))
