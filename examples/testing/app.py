"""The application under test: its broker comes from CONVEYOR_BROKER_URL."""

from conveyor import broker_from_url

broker = broker_from_url()


@broker.task
async def add(x: int, y: int) -> int:
    return x + y


@broker.task(retries=2, retry_delay=0.01)
async def parse_int(text: str) -> int:
    return int(text)
