"""The small shop whose traffic `dashboard_screenshot.py` shows on the dashboard.

Not imported from here: the script copies this file as `shop.py` into its temporary directory,
where `conveyor worker shop:broker` and `conveyor web shop:broker` import it; the broker comes
from `CONVEYOR_BROKER_URL` (a SQLite file there). Five queues: orders, payments, emails, reports
and default. What fails is decided by the arguments, which the script draws from a seeded
generator: payment `n` fails its first attempt when `n % 9 == 0` (then is retried) and every
attempt when `n % 37 == 0` (failed for good, dead-lettered); a SKU ending in 7 is unknown.
"""

from __future__ import annotations

import asyncio
import random
import time

from conveyor import Context, Depends, broker_from_url

broker = broker_from_url()


@broker.task(task_name="orders.place", queue="orders")
async def place(order_id: int, items: int) -> dict[str, int]:
    """Place an order."""
    await asyncio.sleep(random.uniform(0.02, 0.15))
    return {"order": order_id, "items": items}


@broker.task(task_name="payments.charge", queue="payments", retries=3, retry_delay=0.5)
async def charge(order_id: int, amount: float, context: Context = Depends()) -> str:
    """Charge an order's card through a gateway that sometimes times out."""
    await asyncio.sleep(random.uniform(0.04, 0.25))
    if order_id % 37 == 0 or (order_id % 9 == 0 and context.attempt == 1):
        raise ConnectionError(f"gateway timeout for order {order_id}")
    return f"ch_{order_id:06d}"


@broker.task(task_name="emails.send", queue="emails")
def send(to: str, template: str) -> bool:
    """Send an email (a sync task, in the worker's threads)."""
    time.sleep(random.uniform(0.01, 0.06))
    return True


@broker.task(task_name="inventory.sync", timeout=5)
async def sync(sku: str) -> int:
    """Sync a SKU's stock; unknown SKUs fail (no retry)."""
    await asyncio.sleep(random.uniform(0.2, 0.8))
    if sku.endswith("7"):
        raise ValueError(f"unknown SKU {sku}")
    return len(sku)


@broker.task(task_name="reports.build", queue="reports")
async def build(kind: str, pages: int, context: Context = Depends()) -> str:
    """Render `pages` pages, the first third from a cache (fast), reporting the progress."""
    for page in range(1, pages + 1):
        await asyncio.sleep(0.05 if page <= pages // 3 else 1.0)
        await context.set_progress({"done": page, "total": pages})
    return f"{kind}.pdf"


@broker.task(task_name="carts.expire", schedule=[{"interval": 20}])
async def expire() -> int:
    """Expire abandoned carts, every 20 s from the worker that runs the scheduler."""
    await asyncio.sleep(0.05)
    return random.randint(0, 12)
