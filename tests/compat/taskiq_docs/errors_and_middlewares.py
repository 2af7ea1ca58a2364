"""Taskiq's error handling and middleware examples; only the imports differ from Taskiq's
docs."""

import asyncio
from typing import Any

from conveyor.compat.taskiq import InMemoryBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult

reports: list[str] = []


class ErrorReporterMiddleware(TaskiqMiddleware):
    def on_error(
        self,
        message: "TaskiqMessage",
        result: "TaskiqResult[Any]",
        exception: BaseException,
    ) -> None:
        # This code runs on the worker, so the traceback of the exception is still here.
        reports.append(f"Task {message.task_name} failed: {exception!r}")


class MySyncMiddleware(TaskiqMiddleware):
    def pre_send(self, message: "TaskiqMessage") -> TaskiqMessage:
        message.labels["sent_by"] = "sync middleware"
        return message

    def post_send(self, message: "TaskiqMessage") -> None:
        reports.append(f"Message {message.task_id} was sent.")


class MyAsyncMiddleware(TaskiqMiddleware):
    async def pre_execute(self, message: "TaskiqMessage") -> TaskiqMessage:
        await asyncio.sleep(0)
        message.labels["seen_by"] = "async middleware"
        return message

    async def post_save(self, message: "TaskiqMessage", result: "TaskiqResult[Any]") -> None:
        await asyncio.sleep(0)
        reports.append(f"Post save {result.labels['seen_by']}")


broker = InMemoryBroker().with_middlewares(
    ErrorReporterMiddleware(), MySyncMiddleware(), MyAsyncMiddleware()
)


@broker.task
async def divide(a: int, b: int) -> Any:
    return a / b


async def result_error() -> str:
    task = await divide.kiq(1, 0)
    result = await task.wait_result()
    if result.is_err:
        return f"Task failed with {type(result.error).__name__}: {result.error}"
    return f"Returned value: {result.return_value}"


async def raise_for_error() -> str:
    task = await divide.kiq(1, 0)
    try:
        # Raises ZeroDivisionError, otherwise returns the result itself.
        result = (await task.wait_result()).raise_for_error()
    except ZeroDivisionError:
        return "Cannot divide by zero."
    return f"Returned value: {result.return_value}"
