"""Sending from synchronous code (a Flask view, a Django command, a script): `kiq_sync`."""

from __future__ import annotations

from conveyor import InMemoryBroker

broker = InMemoryBroker()


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


def view() -> int:  # plain synchronous code: no event loop here
    handle = add.kiq_sync(1, 2)  # SyncTaskHandle[int]
    return handle.wait_result(timeout=10).return_value


if __name__ == "__main__":
    assert view() == 3
    broker.shutdown_sync()
