"""The project's own test setup: an in-memory broker, and the app's dependencies for tasks."""

import os
from collections.abc import AsyncIterator

os.environ["ENVIRONMENT"] = "pytest"  # before the project is imported

import pytest

from conveyor.compat import taskiq_fastapi
from project.app import app
from project.broker import broker


@pytest.fixture(autouse=True)
async def started() -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        taskiq_fastapi.populate_dependency_context(broker, app)
        yield
