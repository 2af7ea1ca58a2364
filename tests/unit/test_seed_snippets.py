"""The seed README's code runs with only its imports changed (`examples/taskiq_readme/`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conveyor import InMemoryBroker, TaskStatus

EXAMPLES = Path(__file__).parents[2] / "examples" / "taskiq_readme"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"seed_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_seed_script_runs(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


async def test_seed_retry_middleware_retries_four_times() -> None:
    broker: InMemoryBroker = _load("02_retry_middleware").broker
    attempts: list[int] = []

    @broker.task
    async def fails() -> None:
        attempts.append(1)
        raise RuntimeError("flaky")

    result = await (await fails.kiq()).wait_result(timeout=10)
    await broker.shutdown()
    assert result.status is TaskStatus.FAILED
    assert len(attempts) == 5


async def test_seed_middleware_sets_its_label(capsys: pytest.CaptureFixture[str]) -> None:
    module = _load("03_middleware")
    broker = InMemoryBroker(await_inplace=True)
    broker.add_middlewares([module.MyMiddleware()])

    @broker.task
    async def noop() -> None:
        return None

    handle = await noop.kiq()
    result = await handle.get_result()
    await broker.shutdown()
    assert result is not None
    assert result.labels["my_label"] == "my_value"
    assert f"task_id='{handle.task_id}'" in capsys.readouterr().out


async def test_seed_labels_both_forms_reach_the_message() -> None:
    broker = InMemoryBroker(await_inplace=True)
    seen: list[dict[str, Any]] = []

    @broker.task(my_label=1, label2="something")
    async def decorated() -> None:
        return None

    @broker.task
    async def plain() -> None:
        return None

    first = await decorated.kiq()
    second = await plain.kicker().with_labels(my_label=1, label2="something").kiq()
    for handle in (first, second):
        result = await handle.get_result()
        assert result is not None
        seen.append({k: result.labels[k] for k in ("my_label", "label2")})
    await broker.shutdown()
    assert seen == [{"my_label": 1, "label2": "something"}] * 2


async def test_await_inplace_runs_inside_kiq() -> None:
    broker = InMemoryBroker(await_inplace=True)

    @broker.task
    async def add(x: int, y: int) -> int:
        return x + y

    handle = await add.kiq(2, 3)
    result = await handle.get_result()  # no waiting: it ran inside kiq
    await broker.shutdown()
    assert result is not None
    assert result.return_value == 5
