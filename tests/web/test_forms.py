"""Job forms rendered from application descriptions: every input type, defaults, required
marks, safe Markdown, values that reach the server with the right JSON types, and the
server's own messages for requests it refuses."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from everest_app.client import EverestClient
from tests.harness.server import ServerProcess
from tests.web.server_requests import server_refusal

EVERY_TYPE = "/apps/local/every-type"


def field(page: Page, name: str):
    return page.locator(f"#job-form [data-input='{name}']")


def open_form(page: Page, path: str = EVERY_TYPE) -> None:
    page.goto(path)
    expect(page.locator("#job-form")).to_be_visible()


def test_every_input_type_renders(alice_page: Page, alice: EverestClient) -> None:
    page = alice_page
    open_form(page)
    spec = alice.app("local/every-type")["inputs"]
    expect(page.locator("#job-form [data-input]")).to_have_count(len(spec))

    kinds = {"label": "string", "notes": "string", "ratio": "number", "count": "integer",
             "verbose": "boolean", "mode": "enum", "level": "enum", "data": "file",
             "extras": "files", "weights": "array", "tags": "array"}
    for name, kind in kinds.items():
        expect(field(page, name)).to_have_attribute("data-kind", kind)
        # Every control is labelled with the input's title.
        expect(field(page, name).locator("label, legend").first).to_contain_text(
            spec[name]["title"])

    expect(page.get_by_label("Label")).to_have_attribute("type", "text")
    expect(page.get_by_label("Notes")).to_have_js_property("tagName", "TEXTAREA")
    ratio = page.get_by_label("Ratio")
    expect(ratio).to_have_attribute("type", "number")
    expect(ratio).to_have_attribute("step", "any")
    expect(ratio).to_have_value("0.5")  # the default
    count = page.get_by_label("Count")
    expect(count).to_have_attribute("step", "1")
    expect(count).to_have_attribute("min", "1")
    expect(count).to_have_attribute("max", "10")
    expect(page.get_by_label("Verbose")).to_be_checked()
    mode = page.get_by_label("Mode")
    expect(mode).to_have_js_property("tagName", "SELECT")
    expect(mode.locator("option:checked")).to_have_text("careful")
    expect(mode.locator("option")).to_have_text(["fast", "careful", "exhaustive"])
    expect(page.get_by_label("Level").locator("option")).to_have_text(["—", "low", "high"])
    expect(page.get_by_label("Data file")).to_have_attribute("type", "file")
    extras = page.get_by_label("Extra files")
    expect(extras).to_have_attribute("type", "file")
    expect(extras).to_have_attribute("multiple", "")
    weights = field(page, "weights").locator("li input")
    expect(weights).to_have_count(2)
    expect(weights.nth(0)).to_have_value("1")
    expect(weights.nth(1)).to_have_value("2.5")
    expect(field(page, "tags").get_by_label("Tags, item 1")).to_have_value("")

    # Required inputs are marked and required; optional ones are not.
    for name in ("label", "count", "mode"):
        expect(field(page, name).locator(".req")).to_have_count(1)
    expect(page.get_by_label("Label")).to_have_attribute("required", "")
    for name in ("notes", "ratio", "verbose", "level", "data", "extras", "weights", "tags"):
        expect(field(page, name).locator(".req")).to_have_count(0)
    expect(page.get_by_label("Ratio")).not_to_have_attribute("required", "")

    # Descriptions are shown next to their control.
    expect(page.get_by_label("Count")).to_have_accessible_description(
        re.compile(re.escape(spec["count"]["description"])))


def test_description_markdown_is_rendered_safely(alice_page: Page) -> None:
    page = alice_page
    open_form(page)
    about = page.get_by_label("Description")
    expect(about.locator("strong")).to_have_text("every")
    expect(about.locator("li")).to_have_count(2)
    expect(about.locator("li code")).to_have_text("code")
    expect(about.get_by_role("link", name="safe link")).to_have_attribute(
        "href", "https://example.org/doc")
    # Raw HTML is shown as text, and a javascript: link loses its target.
    expect(about).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(page.locator("#app img")).to_have_count(0)
    expect(about.get_by_text("bad link")).to_have_count(1)
    expect(about.locator("a", has_text="bad link")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None


def test_array_rows_can_be_added_and_removed(alice_page: Page) -> None:
    page = alice_page
    open_form(page)
    tags = field(page, "tags")
    tags.get_by_role("button", name="Add item").click()
    tags.get_by_role("button", name="Add item").click()
    expect(tags.locator("li input")).to_have_count(3)
    expect(tags.get_by_label("Tags, item 3")).to_be_focused()
    tags.get_by_role("button", name="Remove Tags item 2").click()
    expect(tags.locator("li input")).to_have_count(2)
    expect(tags.get_by_role("button", name="Remove Tags item 2")).to_have_count(1)


def test_every_input_type_reaches_the_server_typed(alice_page: Page, alice: EverestClient,
                                                   tmp_path: Path) -> None:
    page = alice_page
    one = tmp_path / "one.csv"
    one.write_text("a,b\n1,2\n")
    extra_a, extra_b = tmp_path / "x.txt", tmp_path / "y.txt"
    extra_a.write_text("x")
    extra_b.write_text("y")

    open_form(page)
    page.get_by_label("Job name").fill("typed values")
    page.get_by_label("Label").fill("it's; $(echo no)")
    page.get_by_label("Notes").fill("line one\nline two")
    page.get_by_label("Ratio").fill("-1.25e2")
    page.get_by_label("Count").fill("7")
    page.get_by_label("Verbose").uncheck()
    page.get_by_label("Mode").select_option("exhaustive")
    page.get_by_label("Level").select_option("low")
    page.get_by_label("Data file").set_input_files(one)
    page.get_by_label("Extra files").set_input_files([extra_a, extra_b])
    weights = field(page, "weights")
    weights.get_by_role("button", name="Remove Weights item 1").click()
    weights.get_by_role("button", name="Add item").click()
    weights.get_by_label("Weights, item 2").fill("3")
    tags = field(page, "tags")
    tags.get_by_label("Tags, item 1").fill("alpha")
    tags.get_by_role("button", name="Add item").click()
    tags.get_by_label("Tags, item 2").fill("beta gamma")
    page.get_by_role("button", name="Submit job").click()

    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-state")).to_have_text("DONE")
    job = alice.job(job_id)
    assert job.name == "typed values"
    files = {k: job.inputs.pop(k) for k in ("data", "extras")}
    assert job.inputs == {
        "label": "it's; $(echo no)", "notes": "line one\nline two", "ratio": -125,
        "count": 7, "verbose": False, "mode": "exhaustive", "level": "low",
        "weights": [2.5, 3], "tags": ["alpha", "beta gamma"],
    }
    assert isinstance(job.inputs["count"], int)
    assert alice.read(files["data"]) == one.read_bytes()
    assert [alice.read(u) for u in files["extras"]] == [b"x", b"y"]

    # The page shows the inputs (files as links) and the text result the task printed.
    inputs = page.locator("#inputs")
    expect(inputs.locator("dd[data-name=data] a")).to_have_text("one.csv")
    expect(inputs.locator("dd[data-name=extras] a")).to_have_text(["x.txt", "y.txt"])
    expect(inputs.locator("dd[data-name=verbose]")).to_have_text("no")
    expect(page.locator("#results dd[data-name=summary]")).to_have_text(
        job.result["summary"])
    assert "label=it's; $(echo no) count=7" in job.result["summary"]


def test_optional_inputs_left_empty_take_the_servers_defaults(
        alice_page: Page, alice: EverestClient) -> None:
    page = alice_page
    open_form(page)
    page.get_by_label("Label").fill("defaults")
    page.get_by_label("Count").fill("1")
    page.get_by_label("Ratio").fill("")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    job = alice.job(page.url.rsplit("/", 1)[1])
    assert job.inputs["ratio"] == 0.5
    assert "level" not in job.inputs and "data" not in job.inputs and "tags" not in job.inputs


def test_a_refused_submission_shows_the_servers_message(
        alice_page: Page, alice: EverestClient, web_server: ServerProcess) -> None:
    page = alice_page
    status, message = server_refusal(web_server, "POST", "/api/apps/local/every-type",
                                     json={"name": "no label", "inputs": {"count": 2}})
    assert status == 400
    jobs_before = len(alice.jobs())

    open_form(page)
    # A stale or scripted form can skip the browser's own check; the server has the last word.
    page.get_by_label("Label").evaluate("input => { input.required = false }")
    page.get_by_label("Count").fill("2")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("alert")).to_have_text(message)
    expect(page).to_have_url(re.compile(EVERY_TYPE + "$"))
    expect(page.get_by_role("button", name="Submit job")).to_be_enabled()
    assert len(alice.jobs()) == jobs_before

    # Out of range: the server's bound check, again in its own words.
    status, message = server_refusal(web_server, "POST", "/api/apps/local/every-type",
                                     json={"name": "big", "inputs": {"label": "x", "count": 11}})
    assert status == 400
    page.get_by_label("Label").fill("x")
    page.get_by_label("Count").evaluate("input => { input.removeAttribute('max') }")
    page.get_by_label("Count").fill("11")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("alert")).to_have_text(message)
    assert len(alice.jobs()) == jobs_before


def test_an_unknown_application_shows_the_servers_message(
        alice_page: Page, web_server: ServerProcess) -> None:
    status, message = server_refusal(web_server, "GET", "/api/apps/nobody/no-such-app")
    assert status == 404
    alice_page.goto("/apps/nobody/no-such-app")
    expect(alice_page.get_by_role("alert")).to_have_text(message)
    expect(alice_page.get_by_role("heading", level=1)).to_have_text("Application not found")


def test_templet_export_form_renders_and_its_job_is_accepted(
        alice_page: Page, alice: EverestClient, tmp_path: Path) -> None:
    page = alice_page
    page.goto("/apps?name=MyNewEverest")
    page.get_by_role("link", name="MyNewEverestApplication").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("MyNewEverestApplication")
    for name, kind, title in (("code", "file", "maple code"), ("r", "number", "rho"),
                              ("s", "number", "sigma"), ("b", "number", "beta")):
        expect(field(page, name)).to_have_attribute("data-kind", kind)
        expect(page.get_by_label(title, exact=True)).to_be_visible()
    expect(page.locator("#job-form .req")).to_have_count(0)
    outputs = page.get_by_role("region", name="Outputs")
    for title in ("Lypunov spectrum comp 1", "Lypunov spectrum comp 2",
                  "Lypunov spectrum comp 3", "console output"):
        expect(outputs).to_contain_text(title)

    code = tmp_path / "lorenz.mpl"
    code.write_text("# maple\n")
    page.get_by_label("maple code", exact=True).set_input_files(code)
    page.get_by_label("rho", exact=True).fill("28")
    page.get_by_label("sigma", exact=True).fill("10")
    page.get_by_label("beta", exact=True).fill("2.6667")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    job_id = page.url.rsplit("/", 1)[1]
    # cmd.exe does not exist here: the job fails, and the page says why.
    expect(page.locator("#job-state")).to_have_text("FAILED")
    job = alice.job(job_id)
    assert job.inputs["r"] == 28 and job.inputs["b"] == 2.6667
    assert job.info
    expect(page.locator("#job-info")).to_contain_text(job.info)


def test_inputs_the_server_fills_are_optional_and_tucked_away(
        alice_page: Page, alice: EverestClient, web_server: ServerProcess) -> None:
    page = alice_page
    open_form(page, "/apps/local/server-filled")
    ticket = page.get_by_label("Ticket")
    expect(ticket).to_be_hidden()  # inside a closed "Filled in by the server" section
    expect(ticket).not_to_have_attribute("required", "")
    expect(field(page, "ticket").locator(".req")).to_have_count(0)
    expect(field(page, "x").locator(".req")).to_have_count(1)

    # Left empty, the input is not sent: here no server hook fills it, so the server says so.
    status, message = server_refusal(web_server, "POST", "/api/apps/local/server-filled",
                                     json={"name": "t", "inputs": {"x": 1}})
    assert status == 400
    page.get_by_label("X").fill("1")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("alert")).to_have_text(message)

    # A value the user gives is sent as is.
    page.get_by_text("Filled in by the server (1)").click()
    ticket.fill("my-ticket")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
    assert alice.job(page.url.rsplit("/", 1)[1]).inputs == {"ticket": "my-ticket", "x": 1}

    # The job page folds it away the same way: the user's inputs in view, the ticket closed.
    expect(page.locator("#inputs dd[data-name=x]")).to_have_text("1")
    filled = page.locator("#job-inputs details.server-filled")
    expect(filled.locator("summary")).to_have_text("Filled in by the server (1)")
    expect(page.get_by_text("my-ticket")).to_be_hidden()
    filled.locator("summary").click()
    expect(page.locator("#inputs-server dd[data-name=ticket]")).to_have_text("my-ticket")
