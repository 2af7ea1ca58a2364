"""The tasks: they use the app's state through FastAPI's `Request`, and a session dependency
that rolls back when the task fails."""

from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import Request

from conveyor.compat.taskiq import Context, TaskiqDepends
from project.broker import broker


class Session:
    """Stands for a database session: what it commits lands in the app's store."""

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store
        self.pending: dict[str, Any] = {}

    def add(self, key: str, value: Any) -> None:
        self.pending[key] = value


def get_store(request: Annotated[Request, TaskiqDepends()]) -> dict[str, Any]:
    store: dict[str, Any] = request.app.state.store
    return store


async def get_session(
    store: Annotated[dict[str, Any], TaskiqDepends(get_store)],
) -> AsyncGenerator[Session, None]:
    session = Session(store)
    try:
        yield session
    except Exception:
        session.pending.clear()  # roll back
    else:
        store.update(session.pending)  # commit


@broker.task(task_name="project.save")
async def save(
    key: str, value: int, session: Annotated[Session, TaskiqDepends(get_session)]
) -> int:
    session.add(key, value)
    if value < 0:
        raise ValueError(f"{key}: negative value {value}")
    return value


@broker.task(task_name="project.read")
async def read(key: str, store: Annotated[dict[str, Any], TaskiqDepends(get_store)]) -> Any:
    return store.get(key)


@broker.task(task_name="project.who", retry_on_error=True, max_retries=3)
async def who(context: Annotated[Context, TaskiqDepends()]) -> dict[str, Any]:
    return {"worker": context.broker.is_worker_process, "attempt": context.attempt}


@broker.task(task_name="project.tick", schedule=[{"cron": "0 * * * *", "args": ["hourly"]}])
async def tick(name: str, store: Annotated[dict[str, Any], TaskiqDepends(get_store)]) -> str:
    store[f"tick:{name}"] = True
    return name
