"""Time limits: a soft one the task can catch, a hard one that stops it."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker, SoftTimeLimitExceeded

broker = InMemoryBroker()


# --8<-- [start:timeouts]
@broker.task(soft_timeout=0.1, timeout=1)
async def render(pages: int) -> str:
    done = 0
    try:
        for _ in range(pages):
            await asyncio.sleep(0.05)  # one page
            done += 1
    except SoftTimeLimitExceeded:  # raised at the current await after 0.1 s
        return f"partial: {done} of {pages} pages"  # clean up, return what there is
    return f"all {pages} pages"


@broker.task(timeout=0.1)
async def hangs() -> None:
    await asyncio.sleep(60)  # cancelled after 0.1 s: the run fails with TimeoutError


# --8<-- [end:timeouts]
async def main() -> None:
    partial = await (await render.kiq(100)).wait_result(timeout=5)
    print(partial.return_value)
    assert str(partial.return_value).startswith("partial")

    stopped = await (await hangs.kiq()).wait_result(timeout=5)
    assert stopped.error_type == "TimeoutError"
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
