"""chain, group and chord: each returns one handle for the workflow's final result."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker, chain, chord, group

broker = InMemoryBroker()
urls = ["https://a.example", "https://b.example"]


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task
async def mul(x: int, y: int) -> int:
    return x * y


@broker.task
async def fetch(url: str) -> int:
    return len(url)


@broker.task
async def merge(sizes: list[int]) -> int:
    return sum(sizes)


async def main() -> None:
    # --8<-- [start:workflows]
    h = await chain(add.s(1, 2), mul.s(10)).kiq()  # mul(add(1, 2), 10)
    assert (await h.wait_result(timeout=10)).return_value == 30

    h = await group(add.s(i, i) for i in range(10)).kiq()  # in parallel
    assert (await h.wait_result(timeout=10)).return_value == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]

    h = await chord(group(fetch.s(u) for u in urls), merge.s()).kiq()
    assert (await h.wait_result(timeout=60)).return_value == 34  # merge([fetch(u) ...])

    h = await chain(add.s(1, 2), add.si(5, 5)).kiq()  # .si(): ignores the previous result
    assert (await h.wait_result(timeout=10)).return_value == 10
    # --8<-- [end:workflows]
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
