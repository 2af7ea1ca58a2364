"""The machine's physical reference, measured in the same run: `redis-benchmark` against the
private Redis, one client, the issue's three figures (PING and XADD one at a time, XADD 16 deep).

A one-at-a-time round trip is the floor under every single send and every enqueue-to-start
latency, whatever the library; the issue's targets were set on a machine where XADD ran at
85k/s one at a time. Printing this machine's figure beside them shows how far the host, not a
library, moves the absolute numbers (its ratio changes from minute to minute on a shared VM,
so it is taken once per repetition).
"""

from __future__ import annotations

import csv
import shutil
import statistics
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.redis_server import RedisServer

__all__ = ["ISSUE_REFERENCE", "measure", "render"]

#: What the issue's table gives for its machine (requests/s).
ISSUE_REFERENCE = {"xadd": 85_000.0, "xadd_p16": 780_000.0}
_KEY = "bench:reference"
_TESTS: dict[str, list[str]] = {
    "ping": ["-t", "ping"],
    "xadd": ["XADD", _KEY, "*", "f", "v"],
    "xadd_p16": ["-P", "16", "XADD", _KEY, "*", "f", "v"],
}


def measure(redis: RedisServer, requests: int) -> dict[str, Any]:
    """rps and p50 (ms) of each test, or {"error": why} when redis-benchmark cannot run."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"error": "redis-benchmark is not on PATH"}
    out: dict[str, Any] = {}
    for name, words in _TESTS.items():
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
    return out


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
    return (
        f"machine reference (redis-benchmark, 1 client, median of {len(good)}): "
        f"PING {ping:,.0f}/s (p50 {median('ping', 'p50_ms'):.3f} ms), XADD {xadd:,.0f}/s one at "
        f"a time, {deep:,.0f}/s 16 deep.\nThe issue's machine did XADD 85,000/s one at a time: "
        f"a round trip takes {slower:.1f}x as long here, which moves every library's single-send "
        f"rate and latency."
    )
