"""Resources in the web UI: the read-only list, and the job form's resource picker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.harness.server import ServerProcess
from tests.resources import kit


@pytest.fixture(scope="module")
def web_server(real_components: None,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with two places to run for alice (this machine twice) and one for bob."""
    root = tmp_path_factory.mktemp("web-resources")
    path = kit.write_resources(root / "resources.yaml", [
        {"name": "workstation", "kind": "local", "description": "the desk machine"},
        {"name": "bobs-box", "kind": "docker", "image": "none:1", "users": ["bob"]},
    ])
    server = kit.serve(root / "data", path)
    yield server
    server.close()


def test_resources_page_lists_what_the_user_may_use(alice_page: Page) -> None:
    page = alice_page
    page.goto("/resources")
    table = page.locator("#resources")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("workstation")
    expect(table).to_contain_text("the desk machine")
    expect(table).not_to_contain_text("bobs-box")
    expect(page.get_by_role("link", name="Resources")).to_have_attribute("aria-current", "page")


def test_the_job_form_submits_to_the_picked_resource(alice_page: Page, alice) -> None:
    page = alice_page
    page.goto("/apps/local/probe")
    picker = page.get_by_label("Resource")
    expect(picker.locator("option")).to_have_count(3)  # default, local, workstation
    picker.select_option(label="workstation (local)")
    page.get_by_label("text").fill("picked")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/jobs/*")
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    workstation = next(r for r in alice.request("GET", "/api/resources").json()
                       if r["name"] == "workstation")
    assert alice.job(job_id).raw["resources"] == [workstation["id"]]
    done = alice.wait(job_id, timeout=60)
    assert done.state.value == "DONE" and kit.report_of(done)["argv"] == ["picked"]
    assert "started on workstation" in alice.log(job_id)
