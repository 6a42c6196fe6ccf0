"""Fixtures of the web-UI tests: one real local server for the package, the shared browser.

The server is a real process (``tests.fixtures.local_server.start_server``) with the
Templet export and this folder's test applications (``apps/``) loaded through ``--apps``.
Each test gets a fresh browser context (no cookies), so tests never share a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from everest_app.client import EverestClient
from tests.harness.server import TEMPLET_ZIP, ServerProcess, start_server
from tests.web.server_requests import login_token

HERE = Path(__file__).resolve().parent
EVERY_TYPE_APP = HERE / "apps" / "every-type"
SERVER_FILLED_APP = HERE / "apps" / "server-filled"
TEMPLET_EXPORT = TEMPLET_ZIP
WAIT_MS = 30_000  # upper bound for any one wait; the tests never assert how long things take
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="package")
def web_server(real_components: None,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The local server with the web UI, users alice and bob, and the test apps."""
    folder = tmp_path_factory.mktemp("web-server")
    server = start_server(folder / "data", apps=[TEMPLET_EXPORT, EVERY_TYPE_APP,
                                                   SERVER_FILLED_APP])
    try:
        yield server
    finally:
        server.close()


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
def page(context: BrowserContext) -> Iterator[Page]:
    """A page whose uncaught script errors fail the test."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    assert not errors, f"script errors in the page: {errors}"


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

