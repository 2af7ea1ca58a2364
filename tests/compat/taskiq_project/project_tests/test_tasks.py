"""The project's tests of its tasks."""

import httpx
import pytest

from project import tasks
from project.app import app


async def test_save_commits() -> None:
    task = await tasks.save.kiq("a", 1)
    assert (await task.wait_result(timeout=2)).return_value == 1
    assert app.state.store == {"a": 1}


async def test_a_failing_save_rolls_back_and_fails() -> None:
    task = await tasks.save.kiq("b", -1)
    result = await task.wait_result(timeout=2)
    assert result.is_err
    with pytest.raises(ValueError, match="negative"):
        result.raise_for_error()
    assert "b" not in app.state.store


async def test_through_the_api() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        sent = (await client.post("/items", json={"key": "c", "value": 3})).json()
        done = (await client.get(f"/results/{sent['task_id']}")).json()
        read = (await client.get("/items/c")).json()
    assert (done["value"], read) == (3, 3)


async def test_who() -> None:
    result = await (await tasks.who.kiq()).wait_result(timeout=2)
    assert result.return_value == {"worker": False, "attempt": 1}
