"""Automatic retries: how many, how long between them, and which errors."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker, TaskStatus

broker = InMemoryBroker()
calls: list[int] = []


# --8<-- [start:labels]
@broker.task(
    retries=4,  # up to 4 more attempts after the first
    retry_delay=0.01,  # seconds before the first retry (short, so this example is quick)
    retry_backoff=2.0,  # then 0.02, 0.04, 0.08: delay * backoff ** (retry - 1)
    retry_max_delay=60,  # never more than a minute
    retry_jitter=True,  # each delay drawn from [0, delay]: no stampede after an outage
    retry_on=(ConnectionError, TimeoutError),  # other errors fail at once
)
async def fetch(url: str) -> str:
    calls.append(1)
    if len(calls) < 3:
        raise ConnectionError("connection reset")
    return f"<html from {url}>"


# --8<-- [end:labels]
@broker.task(retries=4, retry_on=(ConnectionError,))
async def parse(text: str) -> int:
    raise ValueError(f"cannot parse {text!r}")  # not in retry_on: no retry


async def main() -> None:
    result = await (await fetch.kiq("https://example.com")).wait_result(timeout=5)
    assert result.status is TaskStatus.SUCCEEDED
    assert result.attempts == 3

    failed = await (await parse.kiq("x")).wait_result(timeout=5)
    assert failed.status is TaskStatus.FAILED
    assert failed.attempts == 1
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
