"""What the import contracts cannot see: what a process actually loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

SEND_ONLY = """
import asyncio, sys
import conveyor, conveyor.web

broker = conveyor.broker_from_url(sys.argv[1])

@broker.task
async def add(x: int, y: int) -> int:
    return x + y

async def main():
    async with broker:
        await add.kiq(1, 2)
        conveyor.web.router(broker)

asyncio.run(main())
print(" ".join(sorted(m for m in sys.modules if m.startswith("conveyor"))))
"""


@pytest.mark.slow
def test_a_process_that_only_sends_never_loads_worker_code(tmp_path: object) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", SEND_ONLY, f"sqlite:///{tmp_path}/send.db"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert "conveyor.engines.sqlite" in loaded
    assert [m for m in loaded if m.startswith("conveyor.worker")] == []
    # Engines are imported when a URL names them.
    others = ("memory", "redis", "postgres", "nats", "amqp", "zmq")
    assert [m for m in loaded if m.split(".")[2:3] and m.split(".")[2] in others] == []


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [
        ("redis://h/0", "hiredis", "redis"),
        ("postgresql://h/db", "asyncpg", "postgres"),
        ("nats://h:4222", "nats", "nats"),
        ("amqp://h/", "aio_pika", "amqp"),
        ("zmq://h:5555", "zmq", "zmq"),
    ],
)
def test_an_engine_without_its_driver_names_the_extra(url: str, driver: str, extra: str) -> None:
    script = (
        f"import sys; sys.modules[{driver!r}] = None\n"  # as if the extra were not installed
        "import conveyor\n"
        "try:\n"
        f"    conveyor.broker_from_url({url!r})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"pip install 'conveyor[{extra}]'" in printed
