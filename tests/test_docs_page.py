"""`/docs` in headless Chromium (Debian's chromium and chromium-driver, installed by `make
test`): the page renders the operations from /openapi.json with no console error and
no request leaving this host; a screenshot is kept in the test's output directory."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from core.settings import Settings
from tests.live_server import LiveServer


def _driver():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):  # fmt: skip
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_docs_renders_every_tag_in_headless_chromium(
    app_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    from mgw.app import create_app

    with LiveServer(create_app(app_settings, run_projectors=False)) as server:
        browser = _driver()
        try:
            browser.get(f"{server.http}/docs")
            deadline = time.monotonic() + 60
            ops: list = []  # type: ignore[type-arg]
            while time.monotonic() < deadline:
                ops = browser.find_elements(By.CSS_SELECTOR, ".opblock")
                if len(ops) >= 100:
                    break
                time.sleep(0.25)
            shot = tmp_path / "docs.png"
            browser.save_screenshot(str(shot))
            out = os.environ.get("MGW_TEST_ARTIFACTS")
            if out:  # CI keeps it beside the test log
                Path(out).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(out) / "docs.png")
            print(f"screenshot: {shot}")
            assert len(ops) >= 100, f"{len(ops)} operations rendered; screenshot {shot}"
            title = browser.find_element(By.CSS_SELECTOR, ".info .title").text
            assert "Media Gateway API" in title
            paths = {
                e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
            }
            assert "/v1/search" in paths and "/v1/me/continue-watching" in paths
            errors = [
                e for e in browser.get_log("browser")
                if e["level"] in ("SEVERE", "ERROR")
            ]  # fmt: skip
            assert errors == [], errors
            # every resource the page loaded came from this server
            urls = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert urls and all(u.startswith(server.http) for u in urls), urls
            assert shot.stat().st_size > 10_000
        finally:
            browser.quit()
