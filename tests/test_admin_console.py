"""The admin console (/admin) and the health dashboard, against the real app on a real
socket: signing in through our own OAuth code flow in headless Chromium (Debian's chromium
and chromium-driver, like tests/test_docs_page.py), the health page, locking an account;
with an HTTP client: CSRF, a non-admin refused, the JSON for scripts. Screenshots are kept
in the test's output directory."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from core.topics import PLAYBACK
from projections.registry import PROJECTORS
from streams.embedded import EmbeddedLog
from streams.log import OutgoingRecord
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.live_server import LiveServer

PASSWORD = "correct horse battery staple"


class _Later:
    """An ASGI app given later: the app's public URL must name the server's port, known
    only once the server has its socket."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@contextlib.contextmanager
def _serve(settings: Settings, **identity: Any) -> Iterator[LiveServer]:
    """The app on a real socket, its public URL that socket's (the console's redirect URI)."""
    from mgw.app import create_app

    later = _Later()
    live = LiveServer(later)
    ident = dataclasses.replace(settings.identity, public_url=live.http, **identity)
    later.app = create_app(dataclasses.replace(settings, identity=ident))
    with live:
        yield live


@pytest.fixture
def server(app_settings: Settings) -> Iterator[LiveServer]:
    with _serve(app_settings) as live:
        yield live


def _driver() -> Any:
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


def _shot(browser: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / f"{name}.png"
    browser.save_screenshot(str(shot))
    out = os.environ.get("MGW_TEST_ARTIFACTS")
    if out:  # CI keeps it beside the test log
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / f"admin-{name}.png")
    print(f"screenshot: {shot}")
    return shot


_LAG_ROWS = """return Array.from(document.querySelectorAll('#projectors tr.projector')).map(
  r => [r.dataset.name, r.querySelector('.lag-records').textContent.trim(),
        r.querySelector('.lag-seconds').textContent.trim()]);"""


def _until(browser: Any, check: Any, what: str) -> None:
    """Wait (10 s at most) for ``check(browser)`` after a click that navigates: the old
    page may still be there, or go stale under the lookup."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(
        browser, 10, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(check, message=what)


def _text(by: str, value: str, expected: str) -> Any:
    return lambda b: b.find_element(by, value).text == expected


def _token(http: httpx.Client, email: str, password: str) -> str:
    r = http.post(
        "/oauth/token",
        data={"grant_type": "password", "client_id": "mgw-app", "username": email,
              "password": password},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _register(http: httpx.Client, name: str) -> tuple[str, str]:
    email = f"{name.lower()}.{time.monotonic_ns()}@example.com"
    r = http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": name}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), email


def _console_sign_in(http: httpx.Client, email: str, password: str) -> httpx.Response:
    """The browser's way in, by hand: /admin/login → the sign-in form → /admin/callback."""
    form_page = http.get("/admin/login", follow_redirects=True)
    assert form_page.status_code == 200 and "/oauth/authorize" in str(form_page.url)
    hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form_page.text))
    data = {k: unescape(v) for k, v in hidden.items()} | {"username": email, "password": password}
    return http.post(str(form_page.url), data=data, follow_redirects=True)


def _poison(settings: Settings) -> None:
    """A record no projector of the playback topic can decode: dead letters."""

    async def append() -> None:
        assert settings.database_url
        log = await EmbeddedLog(settings.database_url).open()
        try:
            await log.append(PLAYBACK.name, OutgoingRecord(b"u1", b"\x00garbage\xff", ()))
        finally:
            await log.close()

    asyncio.run(append())


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


@pytest.mark.timeout(600)
def test_admin_signs_in_sees_health_and_locks_a_user_in_headless_chromium(
    server: LiveServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    http = httpx.Client(base_url=server.http, timeout=60)
    admin = {"Authorization": f"Bearer {_token(http, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    user_id, email = _register(http, "Locky")
    browser = _driver()
    try:
        browser.get(f"{server.http}/admin/health")
        # anonymous: sent to our own sign-in page by the code flow
        assert "/oauth/authorize" in browser.current_url, browser.current_url
        _shot(browser, tmp_path, "sign-in")
        browser.find_element(By.NAME, "username").send_keys(ADMIN_EMAIL)
        browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _until(browser, lambda b: b.current_url == f"{server.http}/admin/health", "signed in")

        # every projector with its lag in events and in seconds (the page reloads itself)
        deadline = time.monotonic() + 60
        while True:
            # read in one go: the page may reload itself under a row-by-row read
            rows = {name: (n, s) for name, n, s in browser.execute_script(_LAG_ROWS)}
            numeric = all(
                re.fullmatch(r"\d+", n) and re.fullmatch(r"\d+\.\d", s) for n, s in rows.values()
            )
            if numeric or time.monotonic() > deadline:
                break
            time.sleep(1)
            browser.refresh()
        shot = _shot(browser, tmp_path, "health")
        assert set(rows) == {p.name for p in PROJECTORS}, (set(rows), shot)
        assert numeric, (rows, shot)
        deps = browser.find_element(By.ID, "dependencies").text
        for name in ("postgres", "redis", "log"):
            assert name in deps, deps
        assert browser.find_element(By.ID, "overall").text == "ready"
        refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh.get_attribute("content") == "10"

        # find the user, lock them
        browser.find_element(By.LINK_TEXT, "Users").click()
        _until(browser, _text(By.TAG_NAME, "h1", "Users"), "the users page")
        browser.find_element(By.NAME, "q").send_keys(email)
        browser.find_element(By.CSS_SELECTOR, "form.search button").click()
        _until(browser, lambda b: b.find_element(By.LINK_TEXT, email), "the search result")
        browser.find_element(By.LINK_TEXT, email).click()
        _until(browser, _text(By.ID, "user-state", "active"), "the user page")
        browser.find_element(By.ID, "lock-reason").send_keys("spam from this account")
        browser.find_element(By.ID, "lock").click()
        _until(browser, _text(By.ID, "user-state", "locked"), "the user locked")
        assert "locked" in browser.find_element(By.CSS_SELECTOR, ".flash").text
        _shot(browser, tmp_path, "user-locked")

        # through the API, as scripts see it
        r = http.get(f"/v1/admin/users/{user_id}", headers=admin)
        assert r.status_code == 200 and r.json()["locked"] is True, r.text
        audit = http.get("/v1/admin/audit", params={"target": user_id}, headers=admin).json()
        assert any(e["action"] == "UserLocked" for e in audit["items"]), audit

        # the other pages render
        for label in ("Audit log", "Rate limits", "Ranking", "Experiments", "Dead letters",
                      "Rebuilds"):  # fmt: skip
            browser.find_element(By.LINK_TEXT, label).click()
            _until(
                browser,
                lambda b, w=label.split()[0]: b.find_element(By.TAG_NAME, "h1").text.startswith(w),
                label,
            )
        nav = browser.find_element(By.LINK_TEXT, "Moderation queue")
        assert nav.get_attribute("href") == f"{server.http}/admin/moderation"
        _shot(browser, tmp_path, "rebuilds")

        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors

        browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
        _until(browser, _text(By.TAG_NAME, "h1", "Signed out"), "signed out")
        browser.get(f"{server.http}/admin/users")
        assert "/oauth/authorize" in browser.current_url
    finally:
        browser.quit()
        http.close()


@pytest.mark.timeout(600)
def test_admin_hides_a_reported_title_from_the_moderation_queue_in_headless_chromium(
    server: LiveServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    http = httpx.Client(base_url=server.http, timeout=60)
    admin = {"Authorization": f"Bearer {_token(http, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    cid = f"modui-{time.monotonic_ns()}"
    title = f"Quiet Harbour {cid[-6:]}"
    r = http.post("/v1/content", headers=admin, json={
        "content_id": cid, "title": title, "year": 2015, "genres": ["Drama"],
        "overview": "A lighthouse keeper finds a letter that was never sent.",
    })  # fmt: skip
    assert r.status_code == 202, r.text
    _, email = _register(http, "Reporter")
    user = {"Authorization": f"Bearer {_token(http, email, PASSWORD)}"}
    r = http.post(f"/v1/content/{cid}/reports", headers=user,
                  json={"reason": "inappropriate", "note": "not for children"})  # fmt: skip
    assert r.status_code == 202, r.text
    reported = r.json()["position"]
    row = f'tr.queue-item[data-id="{cid}"]'
    browser = _driver()
    try:
        # signed out: the sign-in brings the browser back to the queue (a page may carry
        # a write's consistency token: it then shows that write)
        browser.get(f"{server.http}/admin/moderation?consistency_token={reported}")
        assert "/oauth/authorize" in browser.current_url, browser.current_url
        browser.find_element(By.NAME, "username").send_keys(ADMIN_EMAIL)
        browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _until(browser, _text(By.TAG_NAME, "h1", "Moderation queue"), "the moderation queue")
        # the report is in the open queue (the default filter), with its reason
        item = browser.find_element(By.CSS_SELECTOR, row)
        assert item.find_element(By.CSS_SELECTOR, "a.title").text == title
        assert item.find_element(By.CSS_SELECTOR, ".reports").text == "1: inappropriate"
        assert item.find_element(By.CSS_SELECTOR, ".status-open").text == "open"
        _shot(browser, tmp_path, "moderation-open")

        item.find_element(By.NAME, "note").send_keys("checked: hidden")
        item.find_element(By.CSS_SELECTOR, 'button[name="action"][value="hide"]').click()
        _until(
            browser, lambda b: "hidden" in b.find_element(By.CSS_SELECTOR, ".flash").text, "hidden"
        )
        assert browser.find_elements(By.CSS_SELECTOR, row) == []  # gone from the open queue
        _shot(browser, tmp_path, "moderation-hidden")

        # the hidden filter shows it, with its decision; its page has the whole record
        Select(browser.find_element(By.NAME, "status")).select_by_visible_text("hidden")
        browser.find_element(By.CSS_SELECTOR, "form.search button").click()
        _until(browser, lambda b: b.find_element(By.CSS_SELECTOR, row), "the hidden filter")
        item = browser.find_element(By.CSS_SELECTOR, row)
        assert item.find_element(By.CSS_SELECTOR, ".status-hidden").text == "hidden"
        assert item.find_element(By.CSS_SELECTOR, 'button[value="unhide"]')
        item.find_element(By.CSS_SELECTOR, "a.title").click()
        _until(browser, _text(By.ID, "moderation-status", "hidden"), "the title's page")
        assert "not for children" in browser.find_element(By.ID, "reports").text
        assert "checked: hidden" in browser.find_element(By.ID, "decisions").text
        _shot(browser, tmp_path, "moderation-title")

        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
    finally:
        browser.quit()
    # the decision went through the API: the title is hidden from ordinary callers
    assert http.get(f"/v1/content/{cid}").status_code == 404
    doc = http.get(f"/v1/content/{cid}", headers=admin).json()
    assert doc["moderation"] == {"status": "hidden"}
    http.close()


@pytest.mark.timeout(600)
def test_the_moderation_console_pages_the_queue_and_edits_only_what_changed(
    server: LiveServer,
) -> None:
    with httpx.Client(base_url=server.http, timeout=60) as console:
        admin = {"Authorization": f"Bearer {_token(console, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
        stamp = time.monotonic_ns()
        ids = [f"modpage-{stamp}-{n}" for n in range(3)]
        for n, cid in enumerate(ids):  # no overview: the rules flag each one
            body = {"content_id": cid, "title": f"Bare {n}", "year": 2001}
            r = console.post("/v1/content", headers=admin, json=body)
            assert r.status_code == 202, r.text
        last = r.json()["position"]
        assert _console_sign_in(console, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200

        # the queue, two to a page: the second page follows the API's cursor
        page = console.get("/admin/moderation", params={"consistency_token": last, "limit": 2})
        assert page.status_code == 200, page.text
        token = _csrf(page.text)
        seen = re.findall(r'data-id="([^"]+)"', page.text)
        more = re.search(r'<a href="([^"]+)">More</a>', page.text)
        assert len(seen) == 2 and more, page.text[:2000]
        assert "consistency_token" not in unescape(more.group(1))
        rest = console.get(unescape(more.group(1))).text
        seen += re.findall(r'data-id="([^"]+)"', rest)
        assert seen == sorted(seen) and set(ids) <= set(seen), seen

        # the form sends only the fields that changed; without its CSRF token, nothing
        target = f"/admin/moderation/{ids[0]}"
        form = {"action": "edit", "from": "title", "note": "wrote one",
                "f.title": "Bare 0", "was.title": "Bare 0", "f.year": "2001", "was.year": "2001",
                "f.overview": "A fixed overview.", "was.overview": "", "f.genres": "",
                "was.genres": ""}  # fmt: skip
        assert console.post(f"{target}/decide", data=form).status_code == 403
        r = console.post(f"{target}/decide", data={**form, "csrf": token})
        assert r.status_code == 303, r.text
        assert r.headers["location"].startswith(f"{target}?consistency_token=")
        assert "edited=" in r.headers["location"] and r.headers["location"].endswith("done=edited")
        shown = console.get(r.headers["location"])
        assert shown.status_code == 200 and "The edit was saved" in shown.text
        assert "A fixed overview." in shown.text  # the page waited for the edit
        record = console.get(f"/v1/admin/moderation/{ids[0]}", headers=admin).json()
        assert [d["fields"] for d in record["decisions"]] == [{"overview": "A fixed overview."}]
        assert record["status"] == "decided"

        # the API's refusal is shown with its status
        bad = {**form, "f.year": "1500", "was.year": "2001", "csrf": token}
        r = console.post(f"{target}/decide", data=bad)
        assert r.status_code == 422 and "year" in r.text, r.text
        r = console.post(f"{target}/decide", data={"action": "unmerge", "csrf": token})
        assert r.status_code == 422

        # an approval from the list returns to the list's filter
        r = console.post(f"/admin/moderation/{ids[1]}/decide",
                         data={"action": "approve", "status": "all", "csrf": token})  # fmt: skip
        assert r.status_code == 303
        assert r.headers["location"].startswith("/admin/moderation?status=all&consistency_token=")
        open_now = console.get(r.headers["location"].replace("status=all", "status=open")).text
        assert f'data-id="{ids[1]}"' not in open_now and f'data-id="{ids[2]}"' in open_now


@pytest.mark.timeout(600)
def test_csrf_non_admins_and_the_json_for_scripts(
    server: LiveServer, app_settings: Settings
) -> None:
    with httpx.Client(base_url=server.http, timeout=60) as http:
        user_id, email = _register(http, "Target")
        admin_token = _token(http, ADMIN_EMAIL, ADMIN_PASSWORD)

        # anonymous: a page redirects to the sign-in, the JSON answers 401
        r = http.get("/admin/users")
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
        assert http.get("/admin/health.json").status_code == 401

        # an admin bearer token opens the JSON; this process's errors are in it
        logging.getLogger("mgw.test_admin_console").error("a test error %s", "shown")
        r = http.get("/admin/health.json", headers={"Authorization": f"Bearer {admin_token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {p["name"] for p in body["projectors"]} == {p.name for p in PROJECTORS}
        assert all(isinstance(p["lag_records"], int) for p in body["projectors"]), body
        assert {"postgres", "redis"} <= {d["name"] for d in body["dependencies"]}
        assert {"pending", "by_topic"} <= set(body["dead_letters"])
        assert "in_progress" in body["rebuilds"]
        assert body["recent_errors"][0]["message"] == "a test error shown", body["recent_errors"]

        # a non-admin's token is refused, and so is their console sign-in
        user_token = _token(http, email, PASSWORD)
        r = http.get("/admin/health.json", headers={"Authorization": f"Bearer {user_token}"})
        assert r.status_code == 403
        r = http.get("/admin/health", headers={"Authorization": f"Bearer {user_token}"})
        assert r.status_code == 403

    with httpx.Client(base_url=server.http, timeout=60) as browser_like:
        refused = _console_sign_in(browser_like, email, PASSWORD)
        assert refused.status_code == 403 and "not an administrator" in refused.text
        assert "mgw_admin" not in browser_like.cookies
        assert browser_like.get("/admin/users").status_code == 303

    with httpx.Client(base_url=server.http, timeout=60) as console:
        page = _console_sign_in(console, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert page.status_code == 200 and str(page.url).endswith("/admin/health"), page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert console.get("/admin/health.json").status_code == 200  # the cookie works too
        user_page = console.get(f"/admin/users/{user_id}")
        token = _csrf(user_page.text)

        # a form without its CSRF token, or with another, is refused and changes nothing
        lock = f"/admin/users/{user_id}/lock"
        assert console.post(lock, data={"reason": "no token"}).status_code == 403
        assert console.post(lock, data={"reason": "x", "csrf": "forged" * 8}).status_code == 403
        r = console.get(
            f"/v1/admin/users/{user_id}", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert r.json()["locked"] is False

        # with it, the change is made (and the answer redirects back to the page)
        r = console.post(lock, data={"reason": "abuse", "csrf": token})
        assert r.status_code == 303 and r.headers["location"].endswith("done=locked")
        r = console.get(
            f"/v1/admin/users/{user_id}", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert r.json()["locked"] is True

        # the API's refusal is shown with its status: an admin cannot lock themself
        me = console.get("/oauth/userinfo", headers={"Authorization": f"Bearer {admin_token}"})
        r = console.post(
            f"/admin/users/{me.json()['sub']}/lock", data={"reason": "x", "csrf": token}
        )
        assert r.status_code == 409 and "your own account" in r.text

        # a poison record: pending per topic on the dashboard, skipped from the console
        _poison(app_settings)
        by_topic: dict[str, int] = {}
        for _ in range(200):
            by_topic = console.get("/admin/health.json").json()["dead_letters"]["by_topic"]
            if by_topic.get(PLAYBACK.name):
                break
            time.sleep(0.05)
        assert by_topic.get(PLAYBACK.name, 0) >= 1, by_topic
        letters = console.get("/admin/dead-letters", params={"topic": PLAYBACK.name}).text
        letter_id = unescape(re.findall(r'name="id" value="([^"]+)"', letters)[0])
        r = console.post("/admin/dead-letters", data={"id": letter_id, "note": "x", "csrf": token})
        assert r.status_code == 303 and r.headers["location"].endswith("done=skipped"), r.text
        skipped: list[str] = []
        for _ in range(200):  # the skip is an event the dead_letters projector folds
            skipped = [
                x["id"]
                for x in console.get(
                    "/v1/admin/dead-letters",
                    params={"state": "skipped"},
                    headers={"Authorization": f"Bearer {admin_token}"},
                ).json()["items"]
            ]
            if letter_id in skipped:
                break
            time.sleep(0.05)
        assert letter_id in skipped, skipped

        # signing out ends the session and its tokens
        r = console.post("/admin/logout", data={"csrf": token})
        assert r.status_code == 200 and "Signed out" in r.text
        assert console.get("/admin/health.json").status_code == 401


@pytest.mark.timeout(600)
def test_the_session_refreshes_its_token_and_ends_with_the_admin_role(
    app_settings: Settings,
) -> None:
    """Access tokens live 30 s here, under the refresh margin: every console request
    refreshes, concurrent ones included (a refresh token spent twice would revoke the
    session). Taking the admin role away ends the console session."""
    with _serve(app_settings, access_token_ttl_s=30) as server:
        http = httpx.Client(base_url=server.http, timeout=60)
        root = {"Authorization": f"Bearer {_token(http, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
        second_id, second_email = _register(http, "Second")
        r = http.put(f"/v1/admin/users/{second_id}/roles/admin", headers=root)
        assert r.status_code == 200, r.text

        console = httpx.Client(base_url=server.http, timeout=60)
        assert _console_sign_in(console, second_email, PASSWORD).status_code == 200
        cookies = dict(console.cookies)

        def get(path: str) -> int:
            with httpx.Client(base_url=server.http, timeout=60, cookies=cookies) as c:
                return c.get(path).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(get, ["/admin/users", "/admin/health.json"] * 6))
        assert statuses == [200] * 12, statuses
        assert get("/admin/rate-limits") == 200

        r = http.delete(f"/v1/admin/users/{second_id}/roles/admin", headers=root)
        assert r.status_code == 200, r.text
        after = console.get("/admin/users")
        assert after.status_code == 303 and after.headers["location"].startswith("/admin/login")
        assert console.get("/admin/health.json").status_code == 401
        http.close()
        console.close()
