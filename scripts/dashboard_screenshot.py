"""Retake the dashboard screenshot of the README and the docs (`docs/dashboard.png`) under real
traffic, the same way each time.

In a temporary directory, on a SQLite file (no server needed), it copies a small shop app
(`dashboard_shop.py`, next to this script, as `shop.py`: orders, payments, emails, inventory and
reports on five queues, one task on a schedule), starts two `conveyor worker` processes (one
with the scheduler) and `conveyor web` through the CLI, and sends a mix of tasks through the
HTTP API for `--seconds` at `--rate` a second: successes, payments that fail and are retried (a
few for good), inventory syncs that fail, and long reports that report their progress. Then it
signs in to the dashboard in headless Chromium (Debian's `chromium` and `chromedriver` through
Selenium, as `tests/integration/test_web_dashboard.py` does), waits until every panel in view
has content and a report's progress bar is among the visible recent tasks, and saves the window
(`WINDOW`) as a PNG::

    .venv/bin/python scripts/dashboard_screenshot.py                  # 180 s -> docs/dashboard.png
    .venv/bin/python scripts/dashboard_screenshot.py --seconds 60 --out /tmp/shot.png

Invariants: every process it starts (the workers, the web process, chromedriver and its Chromium)
runs in a session of its own, so a Ctrl-C reaches only this script, and is stopped by pid when
the script ends, whether it succeeded, failed, or got SIGINT or SIGTERM; the temporary directory
goes with them. `--out` is written only once every panel shows data (else the page goes to
`<out>.failed.png`). A failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

#: The browser window, as the integration test sizes it; the PNG is its visible part.
WINDOW = (1400, 1600)
START_TIMEOUT = 30.0
#: How long the dashboard may take to show every panel, and then a progress bar in view.
PAGE_TIMEOUT = 30.0
PROGRESS_TIMEOUT = 90.0
#: How long a report just sent may take to show its progress bar near the top of the list.
REPORT_WAIT = 6.0
STOP_TIMEOUT = 10.0
CHROMIUM_HINT = "apt-get install -y chromium chromium-driver"

#: The shop app the workers and the web process import (as `shop`), next to this script.
APP = Path(__file__).with_name("dashboard_shop.py")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"

#: The workers: the queues each consumes, and its extra options.
WORKERS = (
    ["-q", "orders,payments,default"],
    ["-q", "orders,emails,reports,default", "--with-scheduler"],
)


class ShotError(Exception):
    """Why the screenshot could not be taken: printed as one line."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="traffic before the shot")
    parser.add_argument("--rate", type=float, default=6.0, help="tasks sent per second")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds < 0:
        parser.error("--rate must be above 0 and --seconds at least 0")
    return args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "(no output)"


class Processes:
    """The subprocesses started so far, each stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, what: str, *argv: str) -> None:
        """Run `python -m conveyor *argv` in the temporary directory, its output in a log."""
        log = self.root / f"{what.replace(' ', '-')}.log"
        command = [sys.executable, "-m", "conveyor", *argv]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # Ctrl-C is this script's to handle
            )
        self.started.append((what, proc, log))

    def check(self) -> None:
        """Raise ShotError naming the first process that has exited, with its last line."""
        for what, proc, log in self.started:
            if proc.poll() is not None:
                raise ShotError(f"{what} exited ({proc.returncode}): {_last_line(log)}")

    def stop(self) -> None:
        """Stop every process started, the last first."""
        for _, proc, _ in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT)


def _wait_ready(url: str, token: str, processes: Processes) -> None:
    """Wait until `conveyor web` answers and sees both workers' heartbeats."""
    deadline = time.monotonic() + START_TIMEOUT
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        processes.check()
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(f"{url}/tasks/health", headers=headers, timeout=2.0)
            if answer.status_code == 200 and answer.json()["workers"] == len(WORKERS):
                return
        time.sleep(0.1)
    raise ShotError(f"the web process and {len(WORKERS)} workers not ready in {START_TIMEOUT} s")


class Traffic(threading.Thread):
    """Sends the shop's tasks through the HTTP API at `rate` per second until stopped; a report
    every `REPORT_EVERY` seconds and whenever `report_now` is set."""

    REPORT_EVERY = 15.0

    def __init__(self, url: str, token: str, rate: float) -> None:
        super().__init__(name="traffic", daemon=True)
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0
        )
        self.rate, self.rng = rate, random.Random(20261207)
        self.halt, self.report_now = threading.Event(), threading.Event()
        self.error: str | None = None
        self.sent = 0

    def run(self) -> None:
        next_report = 0.0
        try:
            while not self.halt.wait(self.rng.expovariate(self.rate)):
                if self.report_now.is_set() or time.monotonic() >= next_report:
                    self.report_now.clear()
                    next_report = time.monotonic() + self.REPORT_EVERY
                    self._send("reports.build", [self.rng.choice(["sales", "stock"]), 40])
                else:
                    self._send(*self._pick())
        except Exception as exc:  # reported by the main thread as one line
            self.error = f"sending tasks failed: {type(exc).__name__}: {exc}"
        finally:
            self.client.close()

    def _pick(self) -> tuple[str, list[Any], dict[str, Any]]:
        """One call: mostly orders, payments and emails (a few reminders, due in 30 to 120 s), and
        now and then an inventory sync (a few of them deferred as much)."""
        n, rng = self.sent + 1000, self.rng
        later = {"delay": rng.choice([30, 60, 90, 120])} if rng.random() < 0.1 else {}
        calls: list[tuple[str, list[Any], dict[str, Any]]] = [
            ("orders.place", [n, rng.randint(1, 6)], {}),
            ("payments.charge", [n, round(rng.uniform(5, 150), 2)], {}),
            (
                "emails.send",
                [f"customer{n % 97}@example.com", "reminder" if later else "receipt"],
                later,
            ),
            ("inventory.sync", [f"SKU-{rng.randint(100, 999)}"], later),
        ]
        return rng.choices(calls, weights=[4, 3, 3, 1])[0]

    def _send(self, name: str, args: list[Any], labels: dict[str, Any] | None = None) -> None:
        body = {"args": args, "labels": labels or {}}
        answer = self.client.post(f"/tasks/{name}", json=body)
        if answer.status_code != 202:
            raise ShotError(f"POST /tasks/{name}: {answer.status_code} {answer.text[:200]}")
        self.sent += 1

    def check(self) -> None:
        """Raise ShotError if sending failed."""
        if self.error is not None:
            raise ShotError(self.error)

    def stop(self) -> None:
        """Stop sending and wait for the thread."""
        self.halt.set()
        self.join(STOP_TIMEOUT)


def _need(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else "")
    if not found:
        raise ShotError(f"{name} not found ({CHROMIUM_HINT})")
    return found


def browser_paths() -> tuple[str, str]:
    """Chromium's and chromedriver's paths, checked (with Selenium) before any traffic."""
    if importlib.util.find_spec("selenium") is None:
        raise ShotError("selenium is missing (.venv/bin/pip install -r requirements-dev.lock)")
    return _need("chromium"), _need("chromedriver")


@contextlib.contextmanager
def chromium(binary: str, driver_path: str) -> Iterator[WebDriver]:
    """A headless Chromium through chromedriver, as the dashboard test starts it; chromedriver
    (and so Chromium) in a session of its own, quit at the end."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--hide-scrollbars")  # the page's scroll bar has no place in the docs
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    service = Service(driver_path, popen_kw={"start_new_session": True})
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except BaseException as exc:  # Ctrl-C too: chromedriver is in a session of its own
        with contextlib.suppress(Exception):
            service.stop()
        if isinstance(exc, WebDriverException):
            raise ShotError(f"chromium did not start: {exc.msg or exc}") from None
        raise
    try:
        yield driver
    finally:
        driver.quit()


def _wait(
    browser: WebDriver, check: Callable[[], object], what: str, timeout: float = PAGE_TIMEOUT
) -> None:
    """Wait until `check()` is truthy, re-trying while the page re-renders."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
    try:
        wait.until(lambda _: check())
    except TimeoutException:
        raise ShotError(f"the dashboard did not show {what} within {timeout:g} s") from None


def _count(browser: WebDriver, selector: str) -> int:
    return len(browser.find_elements("css selector", selector))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _chart_points(browser: WebDriver) -> int:
    return int(browser.find_element("id", "chart-rate").get_attribute("data-points") or 0)


#: True when a progress bar, a quarter full or more, is in the visible part of the recent tasks.
PROGRESS_IN_VIEW = """
const box = document.querySelector("#recent").closest(".scroll").getBoundingClientRect();
const head = document.querySelector("#recent thead").getBoundingClientRect().height;
return [...document.querySelectorAll("#recent tbody [data-progress] progress")].some((bar) => {
  const r = bar.getBoundingClientRect();
  const bottom = Math.min(box.bottom, window.innerHeight);
  return bar.value >= 0.25 && r.top >= box.top + head && r.bottom <= bottom;
});
"""


def _sign_in(browser: WebDriver, url: str, token: str) -> None:
    browser.get(f"{url}/")
    browser.find_element("name", "token").send_keys(token)
    browser.find_element("css selector", "form button").click()
    _wait(browser, lambda: browser.find_element("id", "live").text == "live", "live updates")


def _wait_panels(browser: WebDriver) -> None:
    """Wait until the cards, charts, queues, workers, recent and failed tasks all show data."""
    _wait(browser, lambda: _is_number(browser.find_element("id", "c-rate").text), "the rate")
    _wait(browser, lambda: _chart_points(browser) >= 3, "the history")
    _wait(browser, lambda: _count(browser, "#queues tbody tr") >= 3, "three queues")
    _wait(browser, lambda: _count(browser, "#workers tbody tr") == len(WORKERS), "the workers")
    _wait(browser, lambda: _count(browser, "#recent tbody tr[data-task-id]") >= 12, "recent tasks")
    _wait(browser, lambda: _count(browser, "#failed tbody tr[data-task-id]") >= 3, "failed tasks")


def _progress_in_view(browser: WebDriver) -> bool:
    return bool(browser.execute_script(PROGRESS_IN_VIEW))


def _wait_progress(browser: WebDriver, traffic: Traffic) -> None:
    """Wait until a report's progress bar is among the visible recent tasks, asking for a new
    report each time the last one sank out of view under newer tasks."""
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while not _progress_in_view(browser):
        if time.monotonic() > deadline:
            raise ShotError(f"no report's progress bar came into view in {PROGRESS_TIMEOUT:g} s")
        traffic.check()
        traffic.report_now.set()  # a report just started is near the top of the list
        with contextlib.suppress(ShotError):
            _wait(browser, lambda: _progress_in_view(browser), "progress", timeout=REPORT_WAIT)


def _shoot(browser: WebDriver, url: str, token: str, traffic: Traffic, out: Path) -> None:
    """Sign in, wait for every panel and for a report's progress bar in view, save the PNG;
    when the page never gets there, save it as `<out>.failed.png` for a look."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _sign_in(browser, url, token)
        _wait_panels(browser)
        _wait_progress(browser, traffic)
    except ShotError as exc:
        failed = out.with_suffix(".failed.png")
        browser.save_screenshot(str(failed))
        raise ShotError(f"{exc} (the page then: {failed})") from None
    if not browser.save_screenshot(str(out)):
        raise ShotError(f"could not write {out}")


def _traffic_for(seconds: float, traffic: Traffic, processes: Processes) -> None:
    """Let the traffic run `seconds`, checking once a second that everything still runs."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        traffic.check()
        processes.check()
        time.sleep(min(1.0, left))
    print(f"sent {traffic.sent} tasks in {seconds:g} s; taking the screenshot", flush=True)


def run(seconds: float, rate: float, out: Path) -> None:
    """Everything, in a temporary directory that is removed at the end with its processes."""
    binaries = browser_paths()
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-shot-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root, token, port = Path(tmp), secrets.token_urlsafe(16), _free_port()
        shutil.copyfile(APP, root / "shop.py")
        env = {
            **os.environ,
            "CONVEYOR_BROKER_URL": "sqlite:///shop.db",
            "CONVEYOR_WEB_TOKEN": token,
        }
        processes = Processes(root, env)
        stack.callback(processes.stop)
        for i, options in enumerate(WORKERS, 1):
            processes.start(
                f"worker {i}", "worker", "shop:broker", "--shutdown-timeout", "2", *options
            )
        processes.start("conveyor web", "web", "shop:broker", "--port", str(port), "-l", "WARNING")
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, token, processes)
        traffic = Traffic(url, token, rate)
        traffic.start()
        stack.callback(traffic.stop)
        print(f"2 workers and the web process on {root / 'shop.db'}; sending tasks", flush=True)
        _traffic_for(seconds, traffic, processes)
        browser = stack.enter_context(chromium(*binaries))
        _shoot(browser, url, token, traffic, out)
        print(f"saved {out} after {traffic.sent} tasks")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean stop as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, and print a failure as one line."""
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run(args.seconds, args.rate, args.out.resolve())
    except ShotError as exc:
        print(f"dashboard_screenshot: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or a browser crash: still one line
        print(f"dashboard_screenshot: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "dashboard_screenshot: interrupted; every process it started is stopped",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
