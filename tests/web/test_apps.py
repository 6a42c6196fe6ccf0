"""The catalogue of applications: listing, search by name, and links by id and owner/alias."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from everest_app.client import EverestClient


def test_catalogue_lists_every_application(alice_page: Page, alice: EverestClient) -> None:
    apps = alice.apps()
    alice_page.goto("/apps")
    cards = alice_page.locator("#apps > li")
    expect(cards).to_have_count(len(apps))
    expect(alice_page.locator("#apps-status")).to_have_text(f"{len(apps)} applications.")
    for app in apps:
        link = alice_page.get_by_role("link", name=app["name"], exact=True)
        expect(link).to_have_attribute("href", f"/apps/{app['id']}")


def test_search_uses_the_servers_search_and_is_linkable(alice_page: Page,
                                                        alice: EverestClient) -> None:
    page = alice_page
    expected = [app["name"] for app in alice.search_apps("end")]
    assert expected and len(expected) < len(alice.apps())
    page.goto("/apps")
    page.get_by_role("searchbox", name="Search by name").fill("end")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#apps > li h2")).to_have_text(expected)
    expect(page).to_have_url(re.compile(r"/apps\?name=end$"))

    page.reload()  # the search is in the URL
    expect(page.get_by_role("searchbox", name="Search by name")).to_have_value("end")
    expect(page.locator("#apps > li h2")).to_have_text(expected)

    page.get_by_role("searchbox", name="Search by name").fill("no-such-application-at-all")
    page.keyboard.press("Enter")
    expect(page.locator("#apps > li")).to_have_count(0)
    expect(page.locator("#apps-status")).to_contain_text("0 applications")


def test_application_page_by_id_and_by_owner_alias(alice_page: Page,
                                                   alice: EverestClient) -> None:
    page = alice_page
    app = alice.app("append")
    page.goto("/apps")
    page.get_by_role("link", name=app["name"], exact=True).click()
    expect(page).to_have_url(re.compile(rf"/apps/{app['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(app["name"])
    expect(page.locator(".meta")).to_contain_text(f"{app['owner']}/{app['alias']}")

    page.goto(f"/apps/{app['owner']}/{app['alias']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(app["name"])
    expect(page.get_by_label("Message")).to_be_visible()
