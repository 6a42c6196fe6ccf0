"""Fixtures of the web-UI tests: one real local server and one headless Chromium per session.

The server is a real process (``tests.fixtures.local_server.start_server``) with the
Templet export and this folder's test applications (``apps/``) loaded through ``--apps``.
Each test gets a fresh browser context (no cookies), so tests never share a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from everest_app.client import EverestClient
from tests.fixtures.local_server import TEMPLET_ZIP, ServerProcess, start_server

HERE = Path(__file__).resolve().parent
EVERY_TYPE_APP = HERE / "apps" / "every-type"
SERVER_FILLED_APP = HERE / "apps" / "server-filled"
# The real Everest export (shared/fixtures); a byte-identical copy lives here for clean clones.
TEMPLET_EXPORT = TEMPLET_ZIP or HERE / "apps" / "templet-parsweep.zip"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000  # upper bound for any one wait; the tests never assert how long things take
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The local server with the web UI, users alice and bob, and the test apps."""
    folder = tmp_path_factory.mktemp("web-server")
    server = start_server(folder / "data", apps=[TEMPLET_EXPORT, EVERY_TYPE_APP,
                                                   SERVER_FILLED_APP])
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser, web_server: ServerProcess) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) pointed at the server."""
    ctx = browser.new_context(base_url=web_server.url, accept_downloads=True)
    ctx.set_default_timeout(WAIT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A page whose uncaught script errors fail the test."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    assert not errors, f"script errors in the page: {errors}"


def login_token(server: ServerProcess, user: str = "alice") -> str:
    """A fresh token of ``user`` (its own, so a test may revoke it)."""
    return EverestClient.login(server.url, user, server.password_for(user), label="web-test")


@pytest.fixture
def alice_page(page: Page, context: BrowserContext, web_server: ServerProcess) -> Page:
    """A page whose browser holds a session cookie of alice (logged in through the API)."""
    context.add_cookies([{"name": "access_token", "value": login_token(web_server),
                          "url": web_server.url, "httpOnly": True, "sameSite": "Lax"}])
    return page


@pytest.fixture
def alice(web_server: ServerProcess) -> EverestClient:
    """An API client of alice, to set up and check what the browser did."""
    return web_server.client("alice")


def cookie_session(server: ServerProcess, token: str) -> requests.Session:
    """A requests session that authenticates like the browser: only the cookie."""
    session = requests.Session()
    session.cookies.set("access_token", token, domain="127.0.0.1", path="/")
    return session


def server_refusal(server: ServerProcess, method: str, path: str, **kwargs) -> tuple[int, str]:
    """Status and ``message`` of the server's own answer to a request it refuses."""
    resp = requests.request(method, server.url + path, timeout=10,
                            headers={"Authorization": f"Bearer {server.token}"}, **kwargs)
    assert resp.status_code >= 400, f"{method} {path} was accepted: {resp.text[:200]}"
    return resp.status_code, resp.json()["message"]
