"""The jobs list and a job's page: live state, cancel, delete, unknown ids, and the seam
that shows a JupyterLab session's link."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import Page, Route, expect

from everest_app.client import EverestClient
from everest_app.errors import NotFoundError
from tests.harness.server import ServerProcess
from tests.web.server_requests import server_refusal


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_jobs_list_shows_state_and_refreshes(alice_page: Page, alice: EverestClient) -> None:
    page = alice_page
    first = alice.submit("hostname", {}, name=unique("listed"))
    page.goto("/jobs")
    row = page.locator(f"tr[data-job='{first.id}']")
    expect(row).to_contain_text(first.name)
    expect(row).to_contain_text("Hostname")
    alice.wait(first.id, timeout=60)
    page.get_by_role("button", name="Refresh").click()
    expect(row.locator(".state")).to_have_text("DONE")

    second = alice.submit("hostname", {}, name=unique("later"))
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator(f"tr[data-job='{second.id}']")).to_contain_text(second.name)
    expect(page.locator("#jobs-status")).to_have_text(re.compile(rf"^{len(alice.jobs())} jobs"))

    page.get_by_role("link", name=first.name).click()
    expect(page).to_have_url(re.compile(rf"/jobs/{first.id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(first.name)
    expect(page.locator("#results dd[data-name=hostname]")).to_have_text(
        alice.job(first.id).result["hostname"])


def test_cancel_then_delete_from_the_job_page(alice_page: Page, alice: EverestClient) -> None:
    page = alice_page
    job = alice.submit("sleep", {"duration": 120}, name=unique("long"))
    page.goto(f"/jobs/{job.id}")
    expect(page.locator("#job-state")).to_have_text("RUNNING")  # polled live
    expect(page.locator("#inputs dd[data-name=duration]")).to_have_text("120")
    expect(page.locator("#job-results")).to_have_text("Results appear when the job is done.")

    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("CANCELLED")
    assert alice.job(job.id).state == "CANCELLED"
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()

    # Deleting asks first; saying no keeps the job.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete job").click()
    expect(page).to_have_url(re.compile(rf"/jobs/{job.id}$"))
    assert alice.job(job.id).id == job.id

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete job").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.locator(f"tr[data-job='{job.id}']")).to_have_count(0)
    with pytest.raises(NotFoundError):
        alice.job(job.id)


def test_a_failed_job_shows_why(alice_page: Page, alice: EverestClient) -> None:
    job = alice.submit("sleep", {"duration": -1}, name=unique("negative"))
    alice_page.goto(f"/jobs/{job.id}")
    expect(alice_page.locator("#job-state")).to_have_text("FAILED")
    info = alice.job(job.id).info
    assert info
    expect(alice_page.locator("#job-info")).to_contain_text(info)
    expect(alice_page.locator("#job-log")).to_contain_text(alice.log(job.id).splitlines()[0])


def test_unknown_or_foreign_job_shows_the_servers_message(
        alice_page: Page, web_server: ServerProcess) -> None:
    bobs = web_server.client("bob").submit("hostname", {}, name=unique("bobs"))
    for job_id in ("0123456789abcdef01234567", bobs.id):
        status, message = server_refusal(web_server, "GET", f"/api/jobs/{job_id}")
        assert status == 404
        alice_page.goto(f"/jobs/{job_id}")
        expect(alice_page.get_by_role("alert")).to_have_text(message)
        expect(alice_page.get_by_role("heading", level=1)).to_have_text("Job not found")
        expect(alice_page.get_by_role("button", name="Delete job")).to_be_disabled()


def test_a_session_object_becomes_an_open_jupyterlab_link(alice_page: Page,
                                                           alice: EverestClient) -> None:
    """The issue-4 seam. The server adds ``session`` to jupyter-session jobs; starting a real
    notebook is that issue's test, so here the real job JSON is passed through with a
    ``session`` object added, first without and then with its URL."""
    page = alice_page
    job = alice.submit("sleep", {"duration": 120}, name=unique("session"))
    session = {"id": "s1", "state": "starting", "url": None}

    def add_session(route: Route) -> None:
        real = route.fetch()
        body = {**real.json(), "session": dict(session)}
        route.fulfill(response=real, body=json.dumps(body))

    page.route(f"**/api/jobs/{job.id}", add_session)
    page.goto(f"/jobs/{job.id}")
    box = page.get_by_role("heading", name="JupyterLab session").locator("..")
    expect(box.locator(".session-state")).to_have_text("starting")
    expect(page.get_by_role("link", name="Open JupyterLab")).to_have_count(0)

    url = "http://127.0.0.1:9/s/s1/lab?token=abc"
    session.update(state="ready", url=url)
    link = page.get_by_role("link", name="Open JupyterLab")
    expect(link).to_have_attribute("href", url)
    expect(link).to_have_attribute("target", "_blank")
    expect(box.locator(".session-state")).to_have_text("ready")

    # A URL that is not http(s) never becomes a link.
    session.update(url="javascript:alert(1)", state="ready")
    expect(page.get_by_role("link", name="Open JupyterLab")).to_have_count(0)

    alice.cancel(job.id)
    expect(page.locator("#job-state")).to_have_text("CANCELLED")
    expect(box.locator(".session-state")).to_have_text("ended")
