"""Transactional enqueue with asyncpg: the confirmation task exists only if the order is saved."""

import asyncio
import contextlib
import os

import asyncpg

from conveyor import PostgresBroker
from conveyor.testing import worker

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@localhost:5432/postgres")
broker = PostgresBroker(DATABASE_URL)


@broker.task
async def send_confirmation(order_id: int) -> str:
    return f"order {order_id} confirmed"


# --8<-- [start:enqueue]
async def place_order(conn: asyncpg.Connection, item: str, fail: bool = False) -> None:
    async with conn.transaction():
        order_id = await conn.fetchval("INSERT INTO orders (item) VALUES ($1) RETURNING id", item)
        await send_confirmation.kicker().with_connection(conn).kiq(order_id)
        if fail:
            raise RuntimeError("payment declined")  # rolls back the order and the task


# --8<-- [end:enqueue]


async def main() -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    await conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
    async with broker, worker(broker):
        await place_order(conn, "book")
        with contextlib.suppress(RuntimeError):  # the order and its task are rolled back
            await place_order(conn, "lamp", fail=True)
        await broker.wait_all(timeout=10)
    assert await conn.fetchval("SELECT count(*) FROM orders") == 1
    assert await broker.transport.queue_stats() == []
    await conn.close()
    print("one order saved, one confirmation sent")


if __name__ == "__main__":
    asyncio.run(main())
