"""Sessions started from web pages, in headless Chromium: the local server's form for
``jupyter-session`` (no ticket to paste: the server asks its relay) shows a working link on
the job's page; the relay's own page (for a real Everest's form) signs a user in, mints a
ticket, and shows the link once the session's tunnel is up."""

from __future__ import annotations

import io
import re
import threading
import zipfile
from collections.abc import Callable, Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.harness.relay import RelayProcess
from tests.harness.runner import FakeRunner, new_key, public_text, redeem
from tests.harness.server import ServerProcess
from tests.session.helpers import Api, split_url, status_server

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
    # the relay plugin links its page, which lists the user's workspaces
    workspaces = page.get_by_role("navigation").get_by_role("link", name="Workspaces")
    href = workspaces.get_attribute("href")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", href), href
    assert "<h2>Workspaces</h2>" in requests.get(href, timeout=10).text
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as zf:
        zf.writestr("a.txt", "a")
    relay_api = Api(href.rstrip("/"), local_server.token_for("alice"))
    assert relay_api("PUT", "/api/workspaces/picked", data=packed.getvalue()).status_code == 201
    page.get_by_role("link", name="JupyterLab session", exact=True).click()
    # the Workspace field offers alice's workspaces (and "default"); any name may be typed
    field = page.get_by_label("Workspace", exact=True)
    choices = page.locator(f"datalist#{field.get_attribute('list')} option")
    expect(choices).to_have_count(2)
    assert [choices.nth(i).get_attribute("value") for i in range(2)] == ["default", "picked"]
    expect(page.get_by_role("heading", level=1)).to_have_text("JupyterLab session")
    page.get_by_label("Idle timeout (seconds)").fill("600")
    page.get_by_label("Workspace", exact=True).fill("formws")
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
        assert job.raw["session"]["workspace"]["name"] == "formws"
        expect(page.locator("#session-workspace")).to_contain_text(
            "Workspace formws: saved while the session runs")
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


EVIL_PAGE = b"""<!doctype html><html><body><pre id="read">pending</pre><pre id="mint">pending</pre>
<script>
async function show(id, promise) {
  try { const r = await promise;
        document.getElementById(id).textContent = r.status + " " + await r.text(); }
  catch (e) { document.getElementById(id).textContent = "error " + e; }
}
show("read", fetch("/api/sessions", {credentials: "include"}));
show("mint", fetch("/api/sessions", {method: "POST", credentials: "include", body: "{}",
     headers: {"Content-Type": "application/json", "X-Requested-With": "relay-page"}}));
if (location.hash) {  // the relay's own origin, when the session has one of its own
  show("main", fetch(location.hash.slice(1) + "/api/sessions", {credentials: "include"}));
}
</script><pre id="main">none</pre></body></html>"""


def _attacker_session(relay: RelayProcess, local_server: ServerProcess,
                      ssh_peer: FakeRunner) -> tuple[str, Callable[[], None]]:
    """Alice's session serving what she likes: a page (``files/evil.html``) that asks the
    relay's API for its visitor's sessions, and ``signin`` that sets Everest's and the
    relay's cookies. Returns its base URL and how to stop it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    session = Api(relay.url, local_server.token_for("alice")).new_session(label="attacker")
    key, token = new_key(), "attacker-token-" + "x" * 20
    grant = redeem(relay.url, session["ticket"], public_text(key), token).json()
    base = grant["base_url"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            if self.path.startswith(base + "signin"):
                for cookie in ("access_token=attacker; Path=/", "relay_token=attacker; Path=/",
                               "relay_token=attacker; Path=/api/", "ACCESS_TOKEN=attacker",
                               "harmless=1; Path=/"):
                    self.send_header("Set-Cookie", cookie)
            body = EVIL_PAGE if self.path.startswith(base + "files/") else b'{"ok": true}'
            self.send_header("Content-Type", "text/html" if b"<" in body[:1] else
                             "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = ssh_peer.connect(relay.ssh_port, grant["session_id"], key, grant["host_key"])
    ssh_peer.run(conn.forward_remote_port(grant["forward"]["host"], grant["forward"]["port"],
                                          "127.0.0.1", server.server_address[1]))

    def stop() -> None:
        ssh_peer.close(conn)
        server.shutdown()
        server.server_close()

    url = Api(relay.url, local_server.token_for("alice")).session(session["id"])["url"]
    return url[:url.index(base)] + base, stop  # where the relay serves it


def _sign_in_to_everest(page: Page, server: ServerProcess, user: str) -> str:
    """Sign ``user`` in to the Everest web UI; returns the ``access_token`` cookie's value."""
    page.goto(server.url + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(server.password_for(user))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/apps$"))
    return next(c["value"] for c in page.context.cookies() if c["name"] == "access_token")


def test_a_session_page_reads_nothing_of_its_visitors_sessions(
        page: Page, relay: RelayProcess, local_server: ServerProcess,
        ssh_peer: FakeRunner) -> None:
    """Bob, signed in to the Everest web UI on the same host (its cookie goes to every port),
    opens a page Alice's session serves: it reads none of Bob's sessions, mints none."""
    bob = Api(relay.url, local_server.token_for("bob"))
    bobs = bob.new_session(label="bob's secret")
    base, stop = _attacker_session(relay, local_server, ssh_peer)
    try:
        _sign_in_to_everest(page, local_server, "bob")
        page.goto(base + "files/evil.html")
        expect(page.locator("#read")).not_to_have_text("pending")
        expect(page.locator("#mint")).not_to_have_text("pending")
        read, mint = page.locator("#read").inner_text(), page.locator("#mint").inner_text()
        assert read.startswith("401 ") and bobs["id"] not in read, read
        assert mint.startswith("401 "), mint
        assert [s["id"] for s in bob("GET", "/api/sessions").json()] == [bobs["id"]]
    finally:
        stop()
        bob("DELETE", f"/api/sessions/{bobs['id']}")


def test_a_session_cannot_set_everests_or_the_relays_cookie(
        page: Page, relay: RelayProcess, local_server: ServerProcess,
        ssh_peer: FakeRunner) -> None:
    base, stop = _attacker_session(relay, local_server, ssh_peer)
    try:
        mine = _sign_in_to_everest(page, local_server, "bob")
        page.goto(base + "signin")
        cookies = [(c["name"], c["value"]) for c in page.context.cookies()]
        assert ("harmless", "1") in cookies  # a session's own cookies pass
        assert ("access_token", mine) in cookies
        assert not [c for c in cookies if c[1] == "attacker"], cookies
        page.goto(local_server.url + "/apps")  # still signed in as bob, not as the attacker
        expect(page).to_have_url(re.compile(r"/apps$"))
    finally:
        stop()


def test_with_a_session_host_each_session_is_an_origin_of_its_own(
        page: Page, local_server: ServerProcess, ssh_peer: FakeRunner, tmp_path) -> None:
    """``--session-host``: Bob, signed in on the relay's own page (its cookie: what the
    shared origin cannot protect), opens Alice's session at ``<id>.sessions.localhost``: its
    page reaches no relay API on its own origin and cannot read the relay's across origins;
    the relay's origin does not serve the session's pages."""
    relay = RelayProcess(tmp_path / "state", local_server.url,
                         "--session-host", "sessions.localhost").start()
    bob = Api(relay.url, local_server.token_for("bob"))
    bobs = bob.new_session(label="bob's secret")
    base, stop = _attacker_session(relay, local_server, ssh_peer)
    try:
        sid = bobs["id"]
        assert re.fullmatch(r"http://[0-9a-f]{24}\.sessions\.localhost:\d+/session/"
                            r"[0-9a-f]{24}/", base), base
        page.goto(relay.url + "/")
        page.get_by_label("User name").fill("bob")
        page.get_by_label("Password").fill(local_server.password_for("bob"))
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(f"tr[data-session='{sid}']")).to_be_visible()

        page.goto(base + "files/evil.html#" + relay.url)
        for which in ("read", "mint", "main"):
            expect(page.locator("#" + which)).not_to_have_text("pending")
        read, mint, main = (page.locator("#" + w).inner_text() for w in ("read", "mint", "main"))
        assert read.startswith("404 ") and mint.startswith("404 "), (read, mint)
        assert main.startswith("error "), main  # no CORS: the relay's answer stays unread
        assert sid not in read + mint + main
        assert [s["id"] for s in bob("GET", "/api/sessions").json()] == [sid]

        path = base[base.index("/session/"):] + "files/evil.html"
        on_relay = requests.get(relay.url + path, allow_redirects=False, timeout=30)
        assert on_relay.status_code == 302 and on_relay.headers["Location"] == base[
            :base.index("/session/")] + path
        assert requests.post(relay.url + path, timeout=30).status_code == 404
    finally:
        stop()
        bob("DELETE", f"/api/sessions/{bobs['id']}")
        relay.stop()


def test_jupyterlab_works_at_its_session_host(page: Page, local_server: ServerProcess,
                                              tmp_path) -> None:
    """A real session (runner, JupyterLab, tunnel) at ``<id>.sessions.localhost``: the
    relay finds it ready through its own host, and a cell runs in Chromium there."""
    from tests.fixtures.browser import run_a_cell
    from tests.harness.runner import start_runner, stop_process_group
    from tests.session.helpers import kill_under

    relay = RelayProcess(tmp_path / "state", local_server.url,
                         "--session-host", "sessions.localhost").start()
    api = Api(relay.url, local_server.token_for("alice"))
    session = api.new_session()
    workdir = tmp_path / "task"
    proc = start_runner(workdir, relay.url, session["ticket"], "--idle-timeout", "0")
    try:
        ready = api.wait_state(session["id"], "ready", timeout=120)
        assert ready["url"].startswith(f"http://{session['id']}.sessions.localhost:")
        page.goto(ready["url"])
        run_a_cell(page)
    finally:
        stop_process_group(proc)
        kill_under(workdir)
        relay.stop()


def test_the_relay_page_lists_workspaces_with_download_links(
        page: Page, relay: RelayProcess, local_server: ServerProcess, tmp_path) -> None:
    alice = Api(relay.url, local_server.token_for("alice"))
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as zf:
        zf.writestr("notes/plan.md", "# kept\n")
    assert alice("PUT", "/api/workspaces/page%2Fws", data=packed.getvalue()).status_code == 201
    # a session whose runner said it ends by its time limit in 100 s
    ending = alice.new_session()
    assert redeem(relay.url, ending["ticket"], public_text(new_key()), "t" * 32,
                  runner={"hostname": "h", "time_left": {"time_limit": 100}}).status_code == 200
    page.goto(relay.url + "/")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(local_server.password_for("alice"))
    page.get_by_role("button", name="Sign in").click()
    left = page.locator(f"tr[data-session='{ending['id']}'] td.time-left")
    expect(left).to_have_text(re.compile(r"^1m [0-3]\ds \(time limit\)$|^\d\ds \(time limit\)$"))
    expect(left).to_have_class(re.compile("ending"))  # under 5 minutes: marked
    alice("DELETE", f"/api/sessions/{ending['id']}")
    row = page.locator("tr[data-workspace='page/ws']")
    expect(row).to_contain_text("page/ws")
    expect(page.locator("#usage")).to_contain_text("Using")
    with page.expect_download() as caught:
        row.get_by_role("link", name="zip").click()
    saved = tmp_path / "got.zip"
    caught.value.save_as(saved)
    assert caught.value.suggested_filename == "page-ws.zip"
    with zipfile.ZipFile(saved) as zf:
        assert zf.read("notes/plan.md") == b"# kept\n"
