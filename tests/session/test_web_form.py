"""Sessions started from web pages, in headless Chromium: the local server's form for
``jupyter-session`` (no ticket to paste: the server asks its relay) shows a working link on
the job's page; the relay's own page (for a real Everest's form) signs a user in, mints a
ticket, and shows the link once the session's tunnel is up."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.fixtures.local_server import ServerProcess
from tests.session.helpers import (
    FakeRunner,
    RelayProcess,
    new_key,
    public_text,
    redeem,
    split_url,
    status_server,
)

WAIT_MS = 90_000


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_the_local_form_needs_no_ticket_and_the_job_page_links_the_notebook(
        page: Page, local_server: ServerProcess) -> None:
    page.goto(local_server.url + "/login")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(local_server.password_for("alice"))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/apps$"))
    page.get_by_role("link", name="JupyterLab session", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("JupyterLab session")
    page.get_by_label("Idle timeout (seconds)").fill("600")
    page.get_by_role("button", name="Submit job").click()

    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    job_page, job_id = page.url, page.url.rsplit("/", 1)[1]
    try:
        link = page.locator("#open-session")
        expect(link).to_be_visible(timeout=WAIT_MS)
        url = link.get_attribute("href")
        job = local_server.client("alice").job(job_id)
        assert job.inputs["idle_timeout"] == 600
        assert job.raw["session"]["state"] == "ready" and job.raw["session"]["url"] == url
        base, token = split_url(url)
        assert requests.get(base + "api/status", timeout=10,
                            headers={"Authorization": f"token {token}"}).status_code == 200

        page.goto(url)  # the link opens JupyterLab itself
        expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=WAIT_MS)
        page.goto(job_page)
        page.locator("#cancel").click()
        expect(page.locator("#job-state")).to_have_text("CANCELLED", timeout=WAIT_MS)
        expect(page.locator("#session .session-state")).to_have_text("ended")
        assert local_server.client("alice").job(job_id).raw["session"]["state"] == "ended"
    finally:
        local_server.client("alice").cancel(job_id)


def test_the_relay_page_mints_a_ticket_and_shows_the_link(
        page: Page, relay: RelayProcess, local_server: ServerProcess,
        ssh_peer: FakeRunner) -> None:
    page.goto(relay.url + "/")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("refused")

    page.get_by_label("Password").fill(local_server.password_for("alice"))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="New session").click()
    expect(page.locator("#relay-url")).to_have_text(relay.url)
    ticket = page.locator("#ticket").inner_text()
    assert re.fullmatch(r"[0-9a-f]{40}", ticket)
    row = page.locator("tr[data-session]").first
    expect(row).to_contain_text("waiting")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["relay_token"]["httpOnly"]

    # the job's runner enrolls with that ticket and opens its tunnel
    key = new_key()
    token = "page-test-token-" + "x" * 20
    grant = redeem(relay.url, ticket, public_text(key), token).json()
    notebook_port, stop = status_server(grant["base_url"], token)
    try:
        conn = ssh_peer.connect(relay.ssh_port, grant["session_id"], key, grant["host_key"])
        ssh_peer.run(conn.forward_remote_port(grant["forward"]["host"],
                                              grant["forward"]["port"], "127.0.0.1",
                                              notebook_port))
        link = page.locator(f"tr[data-session='{grant['session_id']}'] a")
        expect(link).to_have_text("open JupyterLab")
        expect(link).to_have_attribute("href", f"{grant['url']}?token={token}")
        ssh_peer.close(conn)
    finally:
        stop()
