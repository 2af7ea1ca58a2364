"""Taskiq's retry middleware examples: only tasks that opt in are retried; only the imports
differ from Taskiq's docs."""

from conveyor.compat.taskiq import InMemoryBroker, SimpleRetryMiddleware
from conveyor.compat.taskiq.middlewares import SmartRetryMiddleware

runs: dict[str, int] = {}

broker = InMemoryBroker().with_middlewares(SimpleRetryMiddleware(default_retry_count=3))


@broker.task(retry_on_error=True, max_retries=4)
async def opted_in() -> None:
    runs["opted_in"] = runs.get("opted_in", 0) + 1
    raise Exception("AAAAA!")


@broker.task
async def not_opted_in() -> None:
    runs["not_opted_in"] = runs.get("not_opted_in", 0) + 1
    raise Exception("AAAAA!")


@broker.task(retry_on_error=True)
async def default_count() -> None:
    runs["default_count"] = runs.get("default_count", 0) + 1
    raise Exception("AAAAA!")


smart_broker = InMemoryBroker().with_middlewares(
    SmartRetryMiddleware(
        default_retry_count=3,
        default_delay=0.05,
        use_jitter=False,
        use_delay_exponent=True,
        max_delay_exponent=0.2,
        types_of_exceptions=(ConnectionError,),
    )
)


@smart_broker.task(retry_on_error=True, delay=1.0)
async def smart(fail_with: str) -> int:
    runs[f"smart {fail_with}"] = runs.get(f"smart {fail_with}", 0) + 1
    if fail_with == "connection":
        raise ConnectionError("try again")
    raise ValueError("not worth retrying")
