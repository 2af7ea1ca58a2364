"""Transactional enqueue from Django: its `connection` inside `transaction.atomic()`."""

import asyncio
import os
from urllib.parse import urlsplit

import django
from django.conf import settings

from conveyor import PostgresBroker
from conveyor.testing import worker

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@localhost:5432/postgres")
url = urlsplit(DATABASE_URL)
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username,
            "HOST": url.hostname,
            "PORT": url.port or 5432,
        }
    }
)
django.setup()
broker = PostgresBroker(DATABASE_URL)


@broker.task
def send_confirmation(order_id: int) -> str:
    return f"order {order_id} confirmed"


# --8<-- [start:view]
from django.db import connection, transaction  # noqa: E402  # after settings, as in a project


def place_order(item: str) -> None:  # e.g. the body of a Django view
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders (item) VALUES (%s) RETURNING id", [item])
            order_id = cursor.fetchone()[0]
        send_confirmation.kicker().with_connection(connection).kiq_sync(order_id)


# --8<-- [end:view]


async def run_what_was_sent() -> None:
    async with broker, worker(broker):  # in production: `conveyor worker django_orders:broker`
        await broker.wait_all(timeout=10)


if __name__ == "__main__":
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
    place_order("book")
    asyncio.run(run_what_was_sent())
    print("the order saved, its confirmation sent")
