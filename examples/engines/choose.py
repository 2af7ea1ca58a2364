"""Choosing an engine: one URL, in code or in CONVEYOR_BROKER_URL."""

from __future__ import annotations

import asyncio

from conveyor import InMemoryBroker, RedisBroker, SqliteBroker, broker_from_url

# --8<-- [start:urls]
broker = broker_from_url()  # CONVEYOR_BROKER_URL, else sqlite:///conveyor.db
broker = broker_from_url("sqlite:///app.db?lease=5")  # a file next to the app, 5 s leases
broker = SqliteBroker("app.db", lease_seconds=5)  # the same, as a class
broker = InMemoryBroker()  # one process: tests and demos
broker = RedisBroker("redis://:secret@localhost:6379/0", prefix="myapp")  # production
broker = broker_from_url("nats://localhost:4222?prefix=myapp")  # NATS JetStream


# --8<-- [end:urls]
async def main() -> None:
    # Brokers connect when they start (or at the first send), not when they are made:
    assert "secret" not in repr(RedisBroker("redis://:secret@localhost:6379/0"))
    sqlite = SqliteBroker("app.db")
    async with sqlite:
        assert sqlite.path.endswith("app.db")


if __name__ == "__main__":
    asyncio.run(main())
