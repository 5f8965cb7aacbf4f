"""The status page in a real headless Chromium (DESIGN.md §10): live states, a chart, no console errors.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); skipped without them,
unless `LAMBDIFY_REQUIRE_SERVICES=1`, where their absence fails the test.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import PORT, serve_command

# The screenshot in the docs is refreshed only when asked (LAMBDIFY_UPDATE_SCREENSHOT=1), so that
# running the suite leaves the work tree as it was.
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "images" / "status-page.png"
SOURCE = """
import logging
import time

from lambdify import handler


@handler(name="hello", timeout=10)
def hello(event, context):
    logging.getLogger("lambdify").info("sleeping %s s", event.get("sleep", 0))
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("bad input")
    return {"ok": True}
"""


def _browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = None if chromium and driver else "chromium and chromium-driver are not installed (apt-get install)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = "selenium is not installed"
    if missing is not None:
        if os.environ.get("LAMBDIFY_REQUIRE_SERVICES") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver or ""))


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


def _states(driver: Any) -> list[str]:
    # (read in one script: the page redraws itself twice a second, so held elements go stale)
    script = """return [...document.querySelectorAll('section[data-function="hello"] table.contexts tr[data-state]')]
        .map(row => row.dataset.state)"""
    return list(driver.execute_script(script))


def _count(driver: Any, selector: str) -> int:
    return int(driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector))


def _wait_for(driver: Any, state: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if state in _states(driver):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"no {state} context within {within} s; saw {_states(driver)}")


def test_status_page_shows_contexts_live(tmp_path: Path, browser: Any) -> None:
    (tmp_path / "slow.py").write_text(textwrap.dedent(SOURCE))
    command = [sys.executable, "-m", "lambdify", "serve", "slow.py", "--port", PORT]
    with serve_command(command, cwd=tmp_path) as server:
        invoke = server.url + "/2015-03-31/functions/hello/invocations"
        for event in ({}, {}, {"fail": True}):
            httpx.post(invoke, json=event, timeout=10)
        browser.get(server.url + "/_lambdify/")
        _wait_for(browser, "idle", 5)
        assert browser.execute_script("return document.querySelector('section[data-function=hello] h2').textContent")

        slow = threading.Thread(target=httpx.post, args=(invoke,), kwargs={"json": {"sleep": 4}, "timeout": 20})
        slow.start()
        try:
            assert _wait_for(browser, "busy", 1.0) <= 1.0
            screenshot = DOCS_SCREENSHOT if os.environ.get("LAMBDIFY_UPDATE_SCREENSHOT") else tmp_path / "status.png"
            assert browser.save_screenshot(str(screenshot))
            assert screenshot.stat().st_size > 10_000  # a rendered page, not an empty image
        finally:
            slow.join(20)
        _wait_for(browser, "idle", 3)
        assert "busy" not in _states(browser)
        assert _count(browser, 'svg.chart[data-function="hello"]') == 1
        assert _count(browser, "svg.chart path.p50") == 1  # the invocations so far, charted
        browser.execute_script("document.querySelector('tr.invocation').click()")
        log = browser.execute_script("return document.querySelector('pre.log').textContent")
        assert "sleeping 4 s" in log and "REPORT RequestId: " in log
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    assert "Exception in ASGI application" not in server.stderr
