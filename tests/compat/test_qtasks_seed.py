"""The QTasks seed (`examples/qtasks_freelancer/main.py`, its imports alone changed) runs with
`python main.py` on the embedded default; its timer, triggers and `echo=True` tasks work."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from conveyor.compat.qtasks import CronTrigger, DateTrigger, IntervalTrigger, QueueTasks
from conveyor.errors import ConfigurationError
from conveyor.scheduler import Cron, Interval, Once, Scheduler
from conveyor.testing import worker
from tests.docs.docsite import ROOT

SEED = ROOT / "examples" / "qtasks_freelancer" / "main.py"
DELIVERED = "Ваш заказ доставлен!"  # "your order is delivered", as the seed sends it
#: What the seed's every-minute `send_reminder` sends ("do not forget the order").
REMINDER = {"chat_id": 123456789, "text": "Не забудьте про заказ!"}  # noqa: RUF001  # Russian, as sent


def _conveyor(*argv: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_python_main_py_runs_the_seed(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(SEED.read_text())
    started = time.time()
    with (tmp_path / "main.log").open("w") as log:
        main = subprocess.Popen([sys.executable, "main.py"], cwd=tmp_path, stderr=log)
    try:
        assert "succeeded" in _conveyor("send", "main:app", "check_orders", "--wait", cwd=tmp_path)
        (tmp_path / "payments-down").touch()
        _conveyor("send", "main:app", "check_payments", "--wait", cwd=tmp_path)
        schedules = _conveyor("inspect", "schedules", "main:app", cwd=tmp_path)
        for _ in range(100):  # what the tasks sent: run by main.py too
            if (tmp_path / "errors.log").exists() and len(_lines(tmp_path / "sent.txt")) == 2:
                break
            time.sleep(0.05)
    finally:
        main.send_signal(signal.SIGTERM)
        main.wait(timeout=20)
    log_text = (tmp_path / "main.log").read_text()
    assert main.returncode == 0, log_text
    assert "Traceback" not in log_text
    assert "send_reminder cron '*/1 * * * *'" in schedules
    sent = [json.loads(line) for line in _lines(tmp_path / "sent.txt")]
    # The cron fires at each minute the run crossed (a run of a few seconds may cross one).
    minutes = int(time.time() // 60) - int(started // 60)
    reminders = [line for line in sent if line == REMINDER]
    assert len(reminders) <= minutes, sent
    assert [line for line in sent if line != REMINDER] == [
        {"chat_id": 1, "text": DELIVERED},
        {"chat_id": 3, "text": DELIVERED},
    ]
    assert (tmp_path / "errors.log").read_text() == "payments API is down\n"
    assert "INFO    conveyor.worker: started check_orders" in log_text  # logs_default_level


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.chdir(tmp_path)  # the embedded default: ./conveyor.db, and the bot's files
    spec = importlib.util.spec_from_file_location("qtasks_seed", SEED)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_timer_sends_the_reminder_every_minute(seed: ModuleType, tmp_path: Path) -> None:
    app: QueueTasks = seed.app
    scheduler = Scheduler(app.broker)
    minute = (time.time() // 60 + 1) * 60
    async with worker(app.broker):
        await scheduler.tick(now=minute - 1)
        await scheduler.tick(now=minute + 1)  # the run due at `minute`
        await app.broker.wait_all(timeout=5)
    await app.broker.shutdown()
    sent = [json.loads(line) for line in _lines(tmp_path / "sent.txt")]
    assert sent == [{"chat_id": 123456789, "text": "Не забудьте про заказ!"}]  # noqa: RUF001  # the seed's Russian


async def test_add_task_with_a_timeout_returns_the_outcome(seed: ModuleType) -> None:
    app: QueueTasks = seed.app

    @app.task(name="double", priority=5)
    async def double(x: int) -> int:
        return 2 * x

    async with worker(app.broker):
        info = await app.add_task("double", args=(21,), timeout=5)
        plain = await app.add_task("double", 1)
    await app.broker.shutdown()
    assert (info.status, info.returning, info.task_name) == ("succeeded", 42, "double")
    assert (plain.status, plain.args) == ("new", [1])


@pytest.mark.parametrize(
    ("trigger", "schedule"),
    [
        (CronTrigger(minute="*/1"), Cron("*/1 * * * *")),
        (CronTrigger(hour=9), Cron("0 9 * * *")),
        (
            CronTrigger(hour="9-17", minute=30, timezone="Europe/Moscow"),
            Cron("30 9-17 * * *", "Europe/Moscow"),
        ),
        (CronTrigger(day_of_week="0-4", hour=8), Cron("0 8 * * 1-5")),
        (CronTrigger(day_of_week="mon,fri"), Cron("0 0 * * mon,fri")),
        (CronTrigger(day=1), Cron("0 0 1 * *")),
        (CronTrigger(second="*/10"), Cron("* * * * * */10")),
        (IntervalTrigger(minutes=5, seconds=30), Interval(330)),
        (
            DateTrigger(datetime(2030, 1, 1, tzinfo=UTC)),
            Once(datetime(2030, 1, 1, tzinfo=UTC).timestamp()),
        ),
    ],
)
def test_triggers_as_apscheduler_reads_them(trigger: object, schedule: object) -> None:
    assert trigger.schedule() == schedule  # type: ignore[attr-defined]  # each trigger has one


def test_what_a_cron_trigger_cannot_say_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="year, jitter have no conveyor form"):
        CronTrigger(year=2030, jitter=5)
    assert IntervalTrigger(weeks=1).schedule() == Interval(timedelta(weeks=1).total_seconds())
