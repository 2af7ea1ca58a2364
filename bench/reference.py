"""The machine's physical reference, measured in the same run: `redis-benchmark` against the
private Redis, one client, the issue's three figures (PING and XADD one at a time, XADD 16 deep),
and the latency floor of scenario (d) with redis-py.

A one-at-a-time round trip is the floor under every single send and every enqueue-to-start
latency, whatever the library; the issue's targets were set on a machine where XADD ran at
85k/s one at a time. Printing this machine's figure beside them shows how far the host, not a
library, moves the absolute numbers (its ratio changes from minute to minute on a shared VM,
so it is taken once per repetition).

The latency floor is scenario (d) with no task queue: this process XADDs `time.time()` at the
scenario's rate with redis-py, and a second process blocked in XREADGROUP with redis-py takes
the difference on arrival: the hop with the usual client and nothing else (a leaner client,
such as a bare asyncio one with hiredis, can come in under it).
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.protocol import Counts
    from bench.servers import RedisServer

__all__ = ["ISSUE_REFERENCE", "floor_medians", "latency_floor", "measure", "render"]

#: What the issue's table gives for its machine (requests/s).
ISSUE_REFERENCE = {"xadd": 85_000.0, "xadd_p16": 780_000.0}
_KEY = "bench:reference"
_TESTS: dict[str, list[str]] = {
    "ping": ["-t", "ping"],
    "xadd": ["XADD", _KEY, "*", "f", "v"],
    "xadd_p16": ["-P", "16", "XADD", _KEY, "*", "f", "v"],
}


def measure(redis: RedisServer, counts: Counts) -> dict[str, Any]:
    """rps and p50 (ms) of each test and the latency floor, or {"error": why} when
    redis-benchmark cannot run."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"error": "redis-benchmark is not on PATH"}
    out: dict[str, Any] = {}
    for name, words in _TESTS.items():
        requests = counts.reference
        n = requests * 16 if "-P" in words else requests
        argv = [binary, "-h", "127.0.0.1", "-p", str(redis.port), "-c", "1", "-n", str(n), "--csv"]
        try:
            done = subprocess.run(
                [*argv, *words], capture_output=True, text=True, timeout=120, check=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return {"error": f"redis-benchmark failed: {type(exc).__name__}"}
        rows = [r for r in csv.DictReader(done.stdout.splitlines()) if r.get("rps")]
        if not rows:
            return {"error": "redis-benchmark printed no figures"}
        row = rows[-1]  # `-t ping` prints PING_INLINE then PING_MBULK: keep the RESP one
        out[name] = {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"])}
        redis.command("DEL", _KEY)
    out["floor"] = latency_floor(redis, counts.latency, counts.latency_rate)
    return out


def latency_floor(redis: RedisServer, count: int, rate: float) -> dict[str, Any]:
    """p50 and p99 (ms) of scenario (d) with bare redis-py on both sides, or {"error": why}."""
    import redis as redis_py

    from bench.scenarios import percentile

    url = redis.url(0)
    consumer = subprocess.Popen(
        [sys.executable, "-m", "bench.reference", url, str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout is not None
        if consumer.stdout.readline().strip() != "ready":
            return {"error": "the floor's consumer did not start"}
        client = redis_py.Redis.from_url(url)
        start = time.perf_counter()
        for i in range(count):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            client.xadd(_KEY, {"s": repr(time.time())})
        client.close()
        line = consumer.communicate(timeout=30)[0]
        delays = sorted(json.loads(line))
    except (OSError, ValueError, subprocess.SubprocessError, redis_py.RedisError) as exc:
        return {"error": f"the latency floor failed: {type(exc).__name__}: {exc}"}
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        redis.command("DEL", _KEY)
    if len(delays) != count:
        return {"error": f"the floor's consumer saw {len(delays)} of {count} entries"}
    return {"p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99)}


def _consume(url: str, count: int) -> None:
    """The floor's consumer: block in XREADGROUP, print the delays (ms) of `count` entries."""
    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    client.xgroup_create(_KEY, "floor", id="$", mkstream=True)
    print("ready", flush=True)
    delays: list[float] = []
    deadline = time.monotonic() + 60 + count
    while len(delays) < count and time.monotonic() < deadline:
        reply: Any = client.xreadgroup("floor", "c", {_KEY: ">"}, count=100, block=1000)
        now = time.time()
        for _, entries in reply or ():
            delays += [(now - float(fields[b"s"])) * 1000 for _, fields in entries]
    print(json.dumps(delays), flush=True)


def floor_medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    """The latency floor's medians over the repetitions, by metric key; empty if not measured."""
    floors = [s["floor"] for s in samples if "p50_ms" in s.get("floor", {})]
    if not floors:
        return {}
    return {
        "latency_p50": statistics.median(f["p50_ms"] for f in floors),
        "latency_p99": statistics.median(f["p99_ms"] for f in floors),
    }


def render(samples: list[dict[str, Any]]) -> str:
    """The medians over the repetitions, and how far they are from the issue's machine."""
    good = [s for s in samples if "error" not in s]
    if not good:
        why = samples[0]["error"] if samples else "not measured"
        return f"machine reference: {why}"

    def median(name: str, field: str) -> float:
        return float(statistics.median(s[name][field] for s in good))

    ping, xadd, deep = median("ping", "rps"), median("xadd", "rps"), median("xadd_p16", "rps")
    slower = ISSUE_REFERENCE["xadd"] / xadd
    medians = floor_medians(good)
    if medians:
        floor = (
            f"Latency floor of (d) with no task queue (redis-py XADD to a redis-py XREADGROUP "
            f"BLOCK in another process): p50 {medians['latency_p50']:.2f} ms, "
            f"p99 {medians['latency_p99']:.2f} ms."
        )
    else:
        floor = next((f"Latency floor: {s['floor']['error']}" for s in good if "floor" in s), "")
    return (
        f"machine reference (redis-benchmark, 1 client, median of {len(good)}): "
        f"PING {ping:,.0f}/s (p50 {median('ping', 'p50_ms'):.3f} ms), XADD {xadd:,.0f}/s one at "
        f"a time, {deep:,.0f}/s 16 deep.\nThe issue's machine did XADD 85,000/s one at a time: "
        f"a round trip takes {slower:.1f}x as long here, which moves every library's single-send "
        f"rate and latency.\n{floor}"
    ).rstrip()


if __name__ == "__main__":  # the floor's consumer process: URL and count
    _consume(sys.argv[1], int(sys.argv[2]))
