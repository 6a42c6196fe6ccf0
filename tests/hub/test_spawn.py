"""EverestSpawner in a real JupyterHub: a spawn through the hub's REST API streams its
stages in order, the server answers through the hub's proxy and the relay, a kernel runs
code, and stopping cancels the Everest job; named servers and profiles; a job cancelled
outside the hub; and in Chromium, signing in with an Everest account, picking a profile and
running a cell, while another user cannot open that server."""

from __future__ import annotations

import sqlite3

import requests
from playwright.sync_api import Browser, Page, expect

from everest_app.client import EverestClient
from tests.fixtures.browser import run_a_cell
from tests.harness.server import password_for
from tests.hub.helpers import HubStack, hub_jobs, wait_job_state
from tests.session.helpers import run_in_kernel, wait_for


def test_spawn_progress_status_kernel_and_stop(stack: HubStack) -> None:
    api = stack.api
    resp = api.spawn("carol")
    assert resp.status_code == 202, resp.text
    events = list(api.progress("carol"))
    messages = [e["message"] for e in events]
    assert events[-1].get("ready"), (messages, stack.hub.log())
    # the event sent just before start() returns may be cut off by the hub's ready event
    # (JupyterHub stops the stream when the spawn ends): the stages before it are all there
    stages = ["Server requested", "Submitted to Everest as job", "Running on the resource",
              "Session runner connected to the relay", "Tunnel up"]
    seen = [next((i for i, m in enumerate(messages) if m.startswith(s)), None)
            for s in stages]
    assert None not in seen and seen == sorted(seen), messages
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)

    (job,) = hub_jobs(stack.everest, "carol")
    assert str(job.state) == "RUNNING"
    assert job.id in next(m for m in messages if m.startswith("Submitted to Everest"))
    assert "Workspace carol: " in " ".join(messages)  # what the server opens, said first
    assert set(job.inputs) >= {"relay", "ticket", "mode"} and job.inputs["mode"] == "hub"
    assert not any("JUPYTERHUB" in str(v) or "api_token" in str(v).lower()
                   for v in job.inputs.values())  # hub secrets never reach Everest

    auth = {"Authorization": f"token {stack.hub.driver_token}"}
    status = requests.get(api.proxied("/user/carol/api/status"), headers=auth, timeout=30)
    assert status.status_code == 200, status.text
    assert "last_activity" in status.json()
    assert run_in_kernel(api.proxied("/user/carol/"), stack.hub.driver_token,
                         "print(6*7)") == "42\n"

    api.stop("carol")
    wait_job_state(stack.everest, job.id, {"CANCELLED"})
    sessions = stack.relay_api()("GET", "/api/sessions").json()
    assert not [s for s in sessions if s["label"] == "testhub/carol/"]


def test_a_named_server_with_a_chosen_profile(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("carol", "gpu", profile="short").status_code == 202
    assert list(api.progress("carol", "gpu"))[-1].get("ready")
    (job,) = hub_jobs(stack.everest, "carol", "gpu")
    assert job.inputs["time_limit"] == 600  # the profile's
    auth = {"Authorization": f"token {stack.hub.driver_token}"}
    status = requests.get(api.proxied("/user/carol/gpu/api/status"), headers=auth, timeout=30)
    assert status.status_code == 200
    # the server reports activity to the hub (every 2 s here) through the relay's forward
    # to the hub API — what the hub's idle culler reads
    first = api.server("carol", "gpu")["last_activity"]
    assert run_in_kernel(api.proxied("/user/carol/gpu/"), stack.hub.driver_token,
                         "print('busy')") == "busy\n"
    wait_for(lambda: api.server("carol", "gpu")["last_activity"] != first, 60,
             "an activity report through the forward", interval=0.5)
    api.stop("carol", "gpu")
    wait_job_state(stack.everest, job.id, {"CANCELLED"})


def test_options_outside_the_profiles_are_refused(stack: HubStack) -> None:
    api = stack.api
    for options, said in (({"profile": "huge"}, "no profile 'huge' here"),
                          ({"profile": "hour", "resource": "any"}, "unknown options")):
        resp = api.spawn("oscar", **options)
        assert resp.status_code in (201, 202, 400), resp.text
        # refused before anything is asked of Everest: the spawn is over at once, and the
        # hub tells why (on the spawn page; its log has the same message)
        wait_for(lambda: api.server("oscar") is None, 30, "the failed spawn to clear")
        wait_for(lambda said=said: said in stack.hub.log(), 10, "the refusal in the log")
    assert not hub_jobs(stack.everest, "oscar")  # nothing was submitted


def test_a_refused_submission_fails_the_spawn_with_everests_reason(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("paul", profile="nowhere").status_code in (201, 202)
    last = list(api.progress("paul"))[-1]
    assert last.get("failed"), last
    assert "Could not start your server: Everest refused" in last["message"]
    assert "0" * 24 in last["message"]  # Everest's own words: which resource it does not know
    wait_for(lambda: api.server("paul") is None, 30, "the failed spawn to clear")
    sessions = stack.relay_api()("GET", "/api/sessions").json()
    assert not [s for s in sessions if s["label"] == "testhub/paul/"]  # closed again
    assert not hub_jobs(stack.everest, "paul")


def test_a_job_that_fails_says_why_in_the_users_words(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("rita", profile="broken").status_code in (201, 202)
    last = list(api.progress("rita"))[-1]
    assert last.get("failed"), last
    (job,) = hub_jobs(stack.everest, "rita")
    message = last["message"]
    assert f"Everest job {job.id} ended FAILED before the server was reachable" in message
    # the runner's own last error line, not its whole log
    assert "The session runner said: " in message and "nothing.whl" in message
    assert len(message) < 1500
    wait_for(lambda: api.server("rita") is None, 30, "the failed spawn to clear")


def test_a_job_cancelled_outside_the_hub_is_noticed(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("dave").status_code == 202
    assert list(api.progress("dave"))[-1].get("ready")
    (job,) = hub_jobs(stack.everest, "dave")
    stack.everest.cancel(job.id)
    wait_job_state(stack.everest, job.id, {"CANCELLED"})
    wait_for(lambda: api.server("dave") is None, 60, "the hub to notice", interval=0.25)
    # and the user can start again
    assert api.spawn("dave").status_code == 202
    assert list(api.progress("dave"))[-1].get("ready")
    api.stop("dave")
    assert not [j for j in hub_jobs(stack.everest, "dave") if not j.is_done]


def _sign_in(browser: Browser, stack: HubStack, user: str) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(90_000)
    page.goto(stack.hub.url + "/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password_for(user))
    page.click("#login_submit")
    return page


def test_sign_in_with_everest_pick_a_profile_and_run_a_cell(stack: HubStack,
                                                            browser: Browser) -> None:
    page = _sign_in(browser, stack, "alice")
    try:
        expect(page.get_by_text("This machine, 10 minutes")).to_be_visible()
        page.check("input[name=profile][value=short]")
        page.get_by_role("button", name="Start").click()
        page.wait_for_url("**/user/alice/lab**", timeout=180_000)
        run_a_cell(page)
    finally:
        page.context.close()

    # the job is alice's own on Everest (her token from the sign-in), with the profile's limit
    alice = EverestClient(stack.server.url, stack.server.token_for("alice"))
    (job,) = [j for j in alice.jobs() if j.name == "jupyterhub:testhub/alice/"]
    assert str(job.state) == "RUNNING" and job.inputs["time_limit"] == 600
    assert not hub_jobs(stack.everest, "alice")  # not the service account's

    # bob signs in too, but alice's server is not his to open
    page = _sign_in(browser, stack, "bob")
    try:
        page.wait_for_url("**/hub/spawn**")
        answer = page.goto(stack.hub.url + "/user/alice/lab")
        assert answer.status == 403
        expect(page.locator("#jp-main-dock-panel")).to_have_count(0)
    finally:
        page.context.close()
    stack.api.stop("alice")
    wait_job_state(alice, job.id, {"CANCELLED"})
    alice.close()


def _hub_sign_in(stack: HubStack, user: str) -> None:
    http = requests.Session()
    http.get(stack.hub.url + "/hub/login", timeout=30)
    resp = http.post(stack.hub.url + "/hub/login", timeout=60, allow_redirects=False, data={
        "username": user, "password": password_for(user), "_xsrf": http.cookies["_xsrf"]})
    assert resp.status_code == 302, resp.text


def test_a_new_sign_in_replaces_the_users_everest_token(stack: HubStack) -> None:
    def hub_tokens() -> int:
        with sqlite3.connect(stack.server.data_dir / "everest.sqlite3") as db:
            return db.execute("SELECT count(*) FROM tokens WHERE user='bob' AND "
                              "label='jupyterhub'").fetchone()[0]

    _hub_sign_in(stack, "bob")
    count = hub_tokens()
    assert count >= 1
    _hub_sign_in(stack, "bob")
    _hub_sign_in(stack, "bob")
    assert hub_tokens() == 1  # each sign-in revoked the one before


def test_a_users_file_survives_stop_and_start_of_their_server(stack: HubStack) -> None:
    api = stack.api
    auth = {"Authorization": f"token {stack.hub.driver_token}"}
    contents = api.proxied("/user/erin/api/contents/kept.txt")
    assert api.spawn("erin").status_code == 202
    events = list(api.progress("erin"))
    assert events[-1].get("ready")
    assert "Workspace erin: new, kept from now on" in [e["message"] for e in events]
    put = requests.put(contents, headers=auth, timeout=30,
                       json={"type": "file", "format": "text", "content": "survives"})
    assert put.status_code in (200, 201), put.text
    listed = stack.relay_api()("GET", "/api/workspaces").json()["workspaces"]
    (mine,) = [w for w in listed if w["name"] == "erin"]  # the server's workspace: <user>
    assert mine["live_session"]
    api.stop("erin")
    (first,) = hub_jobs(stack.everest, "erin")
    wait_job_state(stack.everest, first.id, {"CANCELLED"})

    assert api.spawn("erin").status_code == 202
    events = list(api.progress("erin"))
    assert events[-1].get("ready")
    assert any(e["message"].startswith("Workspace erin: restoring 1 files") for e in events), \
        [e["message"] for e in events]
    try:
        got = requests.get(contents, headers=auth, timeout=30)
        assert got.status_code == 200 and got.json()["content"] == "survives"
    finally:
        api.stop("erin")
    assert "workspace erin saved" in stack.hub.log()
