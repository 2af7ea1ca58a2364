"""Transactional enqueue with psycopg 3, from sync code (a Flask view, a script) and async code."""

import asyncio
import os

import psycopg

from conveyor import PostgresBroker
from conveyor.testing import worker

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@localhost:5432/postgres")
broker = PostgresBroker(DATABASE_URL)


@broker.task
async def send_confirmation(order_id: int) -> str:
    return f"order {order_id} confirmed"


# --8<-- [start:sync]
def place_order(item: str) -> None:
    with psycopg.connect(DATABASE_URL) as conn:  # commits when the block ends without error
        (order_id,) = (
            conn.execute("INSERT INTO orders (item) VALUES (%s) RETURNING id", (item,)).fetchone()
            or ()
        )
        send_confirmation.kicker().with_connection(conn).kiq_sync(order_id)


# --8<-- [end:sync]


# --8<-- [start:async]
async def place_order_async(item: str) -> None:
    async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
        cursor = await conn.execute("INSERT INTO orders (item) VALUES (%s) RETURNING id", (item,))
        (order_id,) = await cursor.fetchone() or ()
        await send_confirmation.kicker().with_connection(conn).kiq(order_id)


# --8<-- [end:async]


async def main() -> None:
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
    async with broker, worker(broker):
        await asyncio.to_thread(place_order, "book")  # sync code, as a web framework's thread
        await place_order_async("lamp")
        await broker.wait_all(timeout=10)
    print("two orders saved, two confirmations sent")


if __name__ == "__main__":
    asyncio.run(main())
