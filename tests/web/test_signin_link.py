"""``everest-jupyter ui``: the embedded server's web UI one command away, signed in through
a one-time link (used twice, the second use is refused; the code reaches no log)."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from tests.fixtures.cli_home import CliHome


def test_server_start_prints_the_web_ui(cli_user: CliHome) -> None:
    result = cli_user.cli("server", "start")
    assert result.returncode == 0, result.stderr
    assert re.search(r"web UI: http://127\.0\.0\.1:\d+/ \('everest-jupyter ui' opens it "
                     r"signed in\)", result.stdout), result.stdout


def test_the_printed_link_signs_in_once(cli_user: CliHome, browser: Browser) -> None:
    result = cli_user.cli("ui", "--no-browser")
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/signin#[\w-]{40,}", link), link

    first = browser.new_context()
    try:
        page = first.new_page()
        page.goto(link)
        expect(page).to_have_url(re.compile(r"/apps$"), timeout=30_000)
        expect(page.get_by_role("heading", name="Applications")).to_be_visible()
        expect(page.locator("#user-name")).not_to_be_empty()
        cookie = [c for c in first.cookies() if c["name"] == "access_token"]
        assert cookie and cookie[0]["httpOnly"]
    finally:
        first.close()

    second = browser.new_context()
    try:
        page = second.new_page()
        page.goto(link)
        expect(page.get_by_role("alert")).to_contain_text("already used or has expired")
        expect(page).to_have_url(re.compile(r"/signin$"))  # stays; the code left the bar
        assert not [c for c in second.cookies() if c["name"] == "access_token"]
        page.goto(link.split("#")[0].replace("/signin", "/apps"))
        expect(page).to_have_url(re.compile(r"/login\?next=%2Fapps$"))
    finally:
        second.close()

    code = link.split("#", 1)[1]
    logs = "".join(p.read_text(errors="replace") for p in cli_user.data_dir.rglob("*.log"))
    assert code not in logs


def test_ui_json(cli_user: CliHome) -> None:
    out = cli_user.cli_json("ui", "--no-browser")
    assert out["signed_in"] is True and "/signin#" in out["url"]
