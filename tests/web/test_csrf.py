"""Cross-site request forgery: a page of another origin on the same site (another port of
127.0.0.1, so the SameSite=Lax cookie *is* sent) cannot submit jobs, delete them or log the
browser in; the same request from the UI's own origin works, so the refusal is the Origin
check and not a broken request."""

from __future__ import annotations

import html
import uuid

from playwright.sync_api import BrowserContext, Page, Route, expect

from everest_app.client import EverestClient
from tests.harness.server import ServerProcess

EVIL = "http://127.0.0.1:9"  # nothing listens there: the browser gets our page via a route

FETCH_SUBMIT = """async ([server, name]) => {
  await fetch(server + "/api/apps/hostname", {
    method: "POST", credentials: "include", mode: "no-cors",
    headers: {"Content-Type": "text/plain"},
    body: JSON.stringify({name, inputs: {}}),
  }).catch(() => null);
}"""


def serve_evil_page(context: BrowserContext, body: str) -> None:
    def fulfill(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html",
                      body=f"<!doctype html><title>evil</title><body>{body}</body>")
    context.route(f"{EVIL}/**", fulfill)


def named(client: EverestClient, name: str) -> list:
    return [job for job in client.jobs() if job.name == name]


def test_cross_origin_requests_with_the_cookie_are_refused(
        alice_page: Page, context: BrowserContext, web_server: ServerProcess,
        alice: EverestClient) -> None:
    page = alice_page
    victim = alice.submit("hostname", {}, name=f"victim-{uuid.uuid4().hex[:8]}")
    forged = f"forged-{uuid.uuid4().hex[:8]}"
    form = (f'<form id="f" method="post" enctype="text/plain" '
            f'action="{html.escape(web_server.url)}/api/apps/hostname">'
            f'<input name=\'{{"name":"{forged}","inputs":{{}},"x":"\' value=\'"}}\'></form>')
    serve_evil_page(context, form)
    page.goto(f"{EVIL}/attack")

    page.evaluate(FETCH_SUBMIT, [web_server.url, forged])
    page.evaluate("""async ([server, id]) => {
      await fetch(server + "/api/jobs/" + id, {method: "DELETE", credentials: "include",
                                               mode: "no-cors"}).catch(() => null);
    }""", [web_server.url, victim.id])
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    assert "refused" in page.content()

    assert named(alice, forged) == []
    assert alice.job(victim.id).id == victim.id

    # The very same request from the UI's own origin goes through.
    page.goto("/apps")
    expect(page.locator("#user-name")).to_have_text("alice")
    page.evaluate(FETCH_SUBMIT, [web_server.url, forged])
    assert len(named(alice, forged)) == 1


def test_a_foreign_page_cannot_log_the_browser_in(
        page: Page, context: BrowserContext, web_server: ServerProcess) -> None:
    form = (f'<form id="f" method="post" action="{html.escape(web_server.url)}'
            f'/api/auth/access_token"><input name="username" value="bob">'
            f'<input name="password" value="{html.escape(web_server.password_for("bob"))}">'
            f'</form>')
    serve_evil_page(context, form)
    page.goto(f"{EVIL}/login-csrf")
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    assert "refused" in page.content()
    assert [c for c in context.cookies() if c["name"] == "access_token"] == []
