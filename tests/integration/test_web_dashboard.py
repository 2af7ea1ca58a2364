"""The dashboard in a real headless Chromium (Debian's `chromium` and `chromedriver`, driven by
Selenium) against `conveyor web` and a worker process: tasks appear and finish live, the
cancel, retry and purge buttons work, the task and worker pages are links that show what
happened, the filters narrow the recent tasks, and the charts come back after a reload.

The second test saves screenshots of the login page, the overview, a task and a worker: into
`$CONVEYOR_SCREENSHOTS` when set (`CONVEYOR_SCREENSHOTS=docs` refreshes the docs site's), else
into the test's temporary directory."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.history import History, Point
from tests.integration.conftest import App, Workers
from tests.integration.webserver import WebServer, serve, start_web

pytestmark = pytest.mark.slow

WAIT = 20.0


def _need(path: str | None, what: str) -> str:
    if path and os.path.exists(path):
        return path
    reason = f"{what} not found (apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this fails instead of skipping")
    pytest.skip(reason)


@pytest.fixture
def web(app: App) -> Iterator[WebServer]:
    yield from serve(app)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium through chromedriver."""
    chromium = _need(shutil.which("chromium") or "/usr/bin/chromium", "chromium")
    driver_path = _need(shutil.which("chromedriver"), "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1600")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(browser: Any, check: Callable[[], Any], what: str) -> Any:
    """Wait for `check()` to return something truthy, re-trying while the page re-renders."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1, ignored_exceptions=ignored)
    return wait.until(lambda _: check(), message=what)


def _status(browser: Any, table: str, task_id: str) -> str:
    from selenium.webdriver.common.by import By

    row = browser.find_element(By.CSS_SELECTOR, f'{table} tr[data-task-id="{task_id}"]')
    return str(row.find_element(By.CSS_SELECTOR, ".badge").get_attribute("data-status"))


def _click(browser: Any, selector: str) -> bool:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, selector).click()
    return True


def _toast(browser: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.ID, "toast").text)


async def _send(client: httpx.AsyncClient, name: str, *args: Any, **labels: Any) -> str:
    answer = await client.post(f"/tasks/{name}", json={"args": list(args), "labels": labels})
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def test_dashboard_shows_tasks_live_and_its_buttons_work(
    app: App, workers: Workers, web: WebServer, browser: Any
) -> None:
    worker = workers.start(app)
    browser.get(f"{web.url}/")  # the login form: the token goes in a POST body, then a cookie
    browser.find_element("name", "token").send_keys(web.token)
    browser.find_element("css selector", "form button").click()
    _wait(browser, lambda: browser.find_elements("id", "live"), "the dashboard after the login")
    browser.get_log("browser")  # drop the login page's expected 401
    _wait(browser, lambda: browser.find_element("id", "live").text == "live", "live updates")
    _wait(browser, lambda: str(worker.pid) in browser.find_element("id", "workers").text, "worker")
    async with web.client() as client:
        # a task sent during the test appears and finishes, without reloading the page
        added = await _send(client, f"{app.name}:add", 20, 22)
        _wait(browser, lambda: _status(browser, "#recent", added) == "succeeded", "add finishes")

        # cancel a running task
        sleepy = await _send(client, f"{app.name}:sleepy", "dash")
        _wait(browser, lambda: _status(browser, "#recent", sleepy) == "running", "sleepy runs")
        cancel = f'#recent tr[data-task-id="{sleepy}"] button[data-action="cancel"]'
        _wait(browser, lambda: _click(browser, cancel), "click cancel")
        _wait(browser, lambda: _status(browser, "#recent", sleepy) == "cancelled", "cancelled")
        result = await client.get(f"/tasks/result/{sleepy}", params={"timeout": 5})
        assert result.json()["status"] == "cancelled"

        # retry a failed task: it is sent again as a new task, which shows up too
        failed = await _send(client, f"{app.name}:boom")
        row = f'#failed tr[data-task-id="{failed}"]'
        _wait(browser, lambda: _click(browser, f'{row} button[data-action="retry"]'), "retry")
        toast = _wait(browser, lambda: "sent again as" in _toast(browser) and _toast(browser), "")
        again = toast.rsplit(" ", 1)[-1]
        assert again != failed
        _wait(browser, lambda: _status(browser, "#recent", again) == "failed", "retry ran")

        # purge a queue, after the confirmation
        await _send(client, f"{app.name}:add", 1, 1, delay=600)
        purge = '#queues tr[data-queue="default"] button[data-action="purge"]'
        _wait(browser, lambda: _click(browser, purge), "click purge")
        _wait(browser, lambda: browser.find_element("id", "confirm").is_displayed(), "confirm")
        browser.find_element("id", "confirm-ok").click()
        _wait(browser, lambda: "purged 1 message" in _toast(browser), "purged")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors

    # the API docs: Swagger UI from the package, under the same policy, with no CDN
    browser.get(f"{web.url}/docs")
    operations = 'div.opblock[id*="tasks"]'
    _wait(browser, lambda: browser.find_elements("css selector", operations), "the docs")
    scripts = [e.get_attribute("src") for e in browser.find_elements("tag name", "script")]
    assert all(src.startswith(f"{web.url}/docs/") for src in scripts), scripts
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def _shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("CONVEYOR_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


async def _plant_history(app: App, minutes: int) -> None:
    """Points as a web process would have recorded them over the last `minutes` minutes."""
    history, now = History(app.broker.state, app.broker.signer), time.time()
    done = failed = 0
    for i in range(minutes * 6, 0, -1):
        wave = 1 + math.sin(i / 9)
        done, failed = done + int(40 * wave), failed + (3 if i % 17 == 0 else 0)
        point = Point(
            t=now - i * 10,
            succeeded=done,
            failed=failed,
            retried=failed // 2,
            waiting=int(30 * wave),
            running=int(6 * wave),
            workers=2,
        )
        await history.record(point)


def _rows(browser: Any, table: str) -> list[str]:
    rows = browser.find_elements("css selector", f"{table} tbody tr[data-task-id]")
    return [str(row.get_attribute("data-task-id")) for row in rows]


def _points(browser: Any) -> int:
    return int(browser.find_element("id", "chart-rate").get_attribute("data-points") or 0)


async def test_pages_filters_and_charts_in_a_browser(
    app: App, workers: Workers, browser: Any, tmp_path: Path
) -> None:
    shots = _shots(tmp_path)
    await _plant_history(app, 30)  # before the web process starts: its own point comes after
    worker = workers.start(app)
    flaky = await (await app.module.flaky.kiq(1)).wait_result(timeout=15)
    boom = await app.module.boom.kiq()
    web = start_web(app)
    try:
        async with web.client() as client:
            added = await _send(client, f"{app.name}:add", 2, 3, note="<img src=x id=injected>")
            report = await _send(client, f"{app.name}:report")
        browser.get(f"{web.url}/?task={flaky.task_id}")  # a link, opened before signing in
        browser.save_screenshot(str(shots / "dashboard-login.png"))
        browser.find_element("name", "token").send_keys(web.token)
        browser.find_element("css selector", "form button").click()
        browser.get_log("browser")  # drop the login page's expected 401

        # the link survived the login: the task's page, a row per attempt
        timeline = "#task-timeline li[data-attempt]"
        _wait(
            browser, lambda: len(browser.find_elements("css selector", timeline)) == 2, "attempts"
        )
        assert (
            "ConnectionError: attempt 1 failed" in browser.find_element("id", "task-timeline").text
        )
        assert browser.find_element("id", "task-return").text == "2"
        browser.save_screenshot(str(shots / "dashboard-task.png"))

        # its worker's page, one click away; back and forward as with any page
        _click(browser, "#task-page a[href*='worker=']")
        _wait(browser, lambda: flaky.task_id in _rows(browser, "#worker-recent"), "the worker")
        assert browser.find_element("id", "worker-live").text == "live"
        assert str(worker.pid) in browser.find_element("id", "worker-page").text
        browser.save_screenshot(str(shots / "dashboard-worker.png"))
        browser.back()
        _wait(browser, lambda: browser.find_elements("css selector", timeline), "the task again")

        # what a task carried is shown as text, never as markup
        browser.get(f"{web.url}/?task={added}")
        _wait(browser, lambda: "<img src=x" in browser.find_element("id", "task-page").text, "")
        assert browser.find_elements("id", "injected") == []

        # the overview: a running task's progress in its row, the charts from the stored points
        browser.get(f"{web.url}/")
        progress = f'#recent tr[data-task-id="{report}"] [data-progress="1/2"]'
        _wait(browser, lambda: browser.find_elements("css selector", progress), "progress")
        _wait(browser, lambda: _points(browser) >= 170, "the stored history")
        browser.save_screenshot(str(shots / "dashboard-overview.png"))
        app.open_gate("report")
        browser.refresh()  # nothing of it lived in the page
        _wait(browser, lambda: _points(browser) >= 170, "the history after a reload")

        # filters: search by name, then by state; each a link of its own
        _wait(browser, lambda: boom.task_id in _rows(browser, "#recent"), "boom listed")
        browser.find_element("id", "filter-name").send_keys("boo")
        _wait(browser, lambda: _rows(browser, "#recent") == [boom.task_id], "the search")
        assert "name=boo" in browser.current_url
        browser.find_element("css selector", '#filter-state option[value="succeeded"]').click()
        _wait(browser, lambda: _rows(browser, "#recent") == [], "nothing both")
        browser.get(f"{web.url}/?state=succeeded")
        _wait(browser, lambda: flaky.task_id in _rows(browser, "#recent"), "a filter in the URL")
        assert boom.task_id not in _rows(browser, "#recent")
        assert browser.find_element("id", "filter-state").get_attribute("value") == "succeeded"
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        web.stop()
