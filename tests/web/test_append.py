"""The issue's browser scenario: log in, submit ``append`` with a file through its form,
watch the job reach DONE, download the output and check what it holds."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from everest_app.client import EverestClient
from tests.harness.server import ServerProcess


def test_append_through_the_form_and_download(page: Page, web_server: ServerProcess,
                                              alice: EverestClient, tmp_path: Path) -> None:
    original = "first line\nsecond line\n"
    upload = tmp_path / "notes.txt"
    upload.write_text(original)
    message = "appended from the browser; $(touch /tmp/x) stays text"

    page.goto("/login")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(web_server.password_for("alice"))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/apps$"))

    page.get_by_role("link", name="Append", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Append")
    page.get_by_label("Message").fill(message)
    page.get_by_label("File").set_input_files(upload)
    page.get_by_role("button", name="Submit job").click()

    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-state")).to_have_text("DONE")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#job-log")).to_contain_text(alice.log(job_id).splitlines()[0])

    # The inputs went through the API as the form said: the message, the uploaded file's URI.
    job = alice.job(job_id)
    assert job.inputs["message"] == message
    assert alice.read(job.inputs["file"]).decode() == original
    expect(page.locator("#inputs dd[data-name=message]")).to_have_text(message)

    link = page.locator("#results dd[data-name=file] a")
    expect(link).to_have_attribute("href", job.result["file"])
    with page.expect_download() as download_info:
        link.click()
    saved = tmp_path / "downloaded.txt"
    download_info.value.save_as(saved)
    content = saved.read_text()
    assert content.startswith(original)
    assert content.rstrip("\n").endswith(message)
    assert content == alice.read(job.result["file"]).decode()

    page.get_by_role("link", name="Jobs", exact=True).first.click()
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row).to_contain_text("DONE")
    expect(row).to_contain_text("Append")
