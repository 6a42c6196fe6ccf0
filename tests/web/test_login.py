"""Logging in and out of the web UI, and what a visitor without a session sees."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect

from tests.harness.server import ServerProcess
from tests.web.server_requests import cookie_session, login_token


@pytest.mark.parametrize("path", ["/apps", "/jobs", "/apps/local/append",
                                  "/jobs/0123456789abcdef01234567"])
def test_logged_out_visit_shows_login(page: Page, path: str) -> None:
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/login\?next=" + re.escape(path.replace("/", "%2F"))))
    expect(page.get_by_label("User name")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()
    expect(page.get_by_role("navigation")).to_have_count(0)


def test_root_goes_to_the_catalogue_via_login(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fapps$"))


def test_stale_session_cookie_shows_login(page: Page, context: BrowserContext,
                                          web_server: ServerProcess) -> None:
    context.add_cookies([{"name": "access_token", "value": "not-a-token",
                          "url": web_server.url}])
    page.goto("/jobs")  # the shell loads; its first API call answers 401
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fjobs$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_wrong_password_shows_the_servers_message(page: Page, web_server: ServerProcess) -> None:
    expected = requests.post(web_server.url + "/api/auth/access_token",
                             json={"username": "alice", "password": "nope"}, timeout=10)
    assert expected.status_code == 401
    page.goto("/login")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("nope")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text(expected.json()["message"])
    expect(page).to_have_url(re.compile(r"/login$"))
    assert not page.context.cookies()


def test_login_form_sets_an_httponly_session_and_returns_to_next(
        page: Page, web_server: ServerProcess) -> None:
    page.goto("/jobs")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(web_server.password_for("alice"))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text("alice")

    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["access_token"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/"
    assert "access_token" not in page.evaluate("document.cookie")
    info = cookie_session(web_server, session["value"]).get(
        web_server.url + "/api/auth/access_token", timeout=10)
    assert info.json()["username"] == "alice"


@pytest.mark.parametrize("offsite", ["//example.org/x", "/%09/127.0.0.1:9/x",
                                     "/%0a/127.0.0.1:9/x", "/%0d/127.0.0.1:9/x",
                                     "/%5Cexample.org/x"])
def test_login_ignores_an_offsite_next(page: Page, web_server: ServerProcess,
                                       offsite: str) -> None:
    page.goto("/login?next=" + offsite)
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(web_server.password_for("alice"))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(web_server.url + "/apps")


def test_logout_revokes_the_session(alice_page: Page, web_server: ServerProcess) -> None:
    page = alice_page
    page.goto("/apps")
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "access_token")
    expect(page.locator("#user-name")).to_have_text("alice")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    gone = cookie_session(web_server, token).get(web_server.url + "/api/jobs", timeout=10)
    assert gone.status_code == 401
    page.goto("/apps")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fapps$"))


def test_pages_forbid_framing_and_foreign_scripts(web_server: ServerProcess) -> None:
    token = login_token(web_server)
    resp = cookie_session(web_server, token).get(web_server.url + "/apps", timeout=10,
                                                 allow_redirects=False)
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
