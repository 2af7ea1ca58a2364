"""Transactional enqueue with SQLAlchemy: an `AsyncSession` (or a `Session`, with `kiq_sync`)."""

import asyncio
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from conveyor import PostgresBroker
from conveyor.testing import worker

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@localhost:5432/postgres")
broker = PostgresBroker(DATABASE_URL)
engine = create_async_engine(DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://", 1))


@broker.task
async def send_confirmation(order_id: int) -> str:
    return f"order {order_id} confirmed"


# --8<-- [start:session]
async def place_order(item: str) -> None:
    async with AsyncSession(engine) as session, session.begin():  # commits at the end
        insert = text("INSERT INTO orders (item) VALUES (:item) RETURNING id")
        order_id = (await session.execute(insert, {"item": item})).scalar_one()
        await send_confirmation.kicker().with_connection(session).kiq(order_id)


# --8<-- [end:session]


async def main() -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS orders (id serial, item text)"))
    async with broker, worker(broker):
        await place_order("book")
        await broker.wait_all(timeout=10)
    await engine.dispose()
    print("the order saved, its confirmation sent")


if __name__ == "__main__":
    asyncio.run(main())
