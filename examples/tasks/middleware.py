"""A middleware: hooks around sending and running every task of a broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conveyor import InMemoryBroker, Middleware, TaskMessage, TaskResult


class Timing(Middleware):
    """Stamps each message when it is sent and logs how long it waited and ran."""

    def pre_send(self, message: TaskMessage) -> TaskMessage:
        message.labels["sent_at"] = time.time()  # a free label: travels with the message
        return message

    async def post_execute(self, message: TaskMessage, result: TaskResult[Any]) -> None:
        waited = time.time() - message.labels["sent_at"] - result.execution_time
        print(f"{message.task_name}: waited {waited * 1000:.1f} ms, {result.status}")


broker = InMemoryBroker().with_middlewares(Timing())


@broker.task
async def ping() -> str:
    return "pong"


async def main() -> None:
    result = await (await ping.kiq()).wait_result(timeout=5)
    assert "sent_at" in result.labels
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
