"""The relay's HTTP API, against a real relay process that checks tokens with the local
server: authentication, ownership, tickets (single use, expiry), long-poll, errors, and
state that survives a restart."""

from __future__ import annotations

import secrets
import threading
import time

import pytest
import requests

from tests.harness.relay import RelayProcess
from tests.harness.runner import new_key, public_text, redeem
from tests.harness.server import ServerProcess
from tests.session.helpers import Api


def test_minting_needs_a_valid_everest_token(relay: RelayProcess, alice: Api) -> None:
    for api in (Api(relay.url, None), Api(relay.url, "not-a-token")):
        resp = api("POST", "/api/sessions", json={})
        assert resp.status_code == 401
        assert resp.json()["message"]

    session = alice.new_session(label="mine")
    assert session["state"] == "waiting" and session["label"] == "mine"
    assert len(session["ticket"]) >= 32  # hex: >= 128 random bits
    assert session["relay_url"] == relay.url
    assert session["url"] is None  # no notebook token before the runner enrolls
    assert "listener" not in session  # sessions are served on the relay's own port
    assert session["id"] in [s["id"] for s in alice("GET", "/api/sessions").json()]


def test_sessions_are_private_to_their_owner(alice: Api, bob: Api) -> None:
    sid = alice.new_session()["id"]
    assert bob("GET", f"/api/sessions/{sid}").status_code == 404
    assert bob("PATCH", f"/api/sessions/{sid}", json={"job_id": "x" * 24}).status_code == 404
    assert bob("DELETE", f"/api/sessions/{sid}").status_code == 404
    assert sid not in [s["id"] for s in bob("GET", "/api/sessions").json()]
    assert alice.session(sid)["state"] == "waiting"


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/api/sessions", b"{not json", 400),
    ("POST", "/api/sessions", b"[1, 2]", 400),
    ("POST", "/api/sessions", b'{"mode": "hub"}', 400),
    ("POST", "/api/sessions", b'{"default_url": "javascript:alert(1)"}', 400),
    ("POST", "/api/sessions", b'{"default_url": "/lab/../../etc"}', 400),
    ("POST", "/api/sessions", b'{"ticket_ttl": -1}', 400),
    ("POST", "/api/sessions", b'{"label": 5}', 400),
    ("GET", "/api/nothing-here", b"", 404),
    ("GET", "/api/sessions/0123456789abcdef01234567", b"", 404),
    ("POST", "/api/tickets/redeem", b"{}", 400),
    ("POST", "/api/tickets/redeem", b"nonsense", 400),
])
def test_bad_requests_get_json_errors(alice: Api, method: str, path: str, body: bytes,
                                      status: int) -> None:
    resp = alice(method, path, data=body)
    assert resp.status_code == status
    assert isinstance(resp.json()["message"], str) and resp.json()["message"]


def test_patch_and_redeem_validate_their_fields(relay: RelayProcess, alice: Api) -> None:
    session = alice.new_session()
    sid = session["id"]
    assert alice("PATCH", f"/api/sessions/{sid}", json={}).status_code == 400
    assert alice("PATCH", f"/api/sessions/{sid}", json={"job_id": "a b;c"}).status_code == 400
    assert alice("PATCH", f"/api/sessions/{sid}", json={"job_id": "ab12"}).json()["job_id"] \
        == "ab12"
    key = public_text(new_key())
    for bad in ({"public_key": "ssh-ed25519 AAAAnotakey"}, {"token": "short"},
                {"token": "x" * 20 + "?&"}, {"runner": "a string"}):
        args = {"public_key": key, "token": "t" * 32, **bad}
        resp = redeem(relay.url, session["ticket"], args.pop("public_key"), args.pop("token"),
                      **args)
        assert resp.status_code == 400, bad
    # none of that used the ticket up
    assert redeem(relay.url, session["ticket"], key).status_code == 200


def test_a_ticket_is_single_use(relay: RelayProcess, alice: Api) -> None:
    session = alice.new_session()
    key, other = public_text(new_key()), public_text(new_key())
    first = redeem(relay.url, session["ticket"], key, "a" * 32)
    assert first.status_code == 200
    grant = first.json()
    assert grant["session_id"] == session["id"]
    assert grant["base_url"] == f"/session/{session['id']}/"
    assert grant["url"] == f"{relay.url}/session/{session['id']}/lab"
    assert grant["ssh"] == {"host": "127.0.0.1", "port": relay.ssh_port,
                            "username": session["id"],
                            "websocket": relay.url.replace("http", "ws", 1) + "/api/tunnel"}
    assert grant["host_key"].startswith("ssh-ed25519 ")

    reused = redeem(relay.url, session["ticket"], other, "b" * 32)
    assert reused.status_code == 403 and "already used" in reused.json()["message"]
    assert redeem(relay.url, session["ticket"], key, "c" * 32).status_code == 403
    # the same runner retrying after a lost answer gets its grant again
    assert redeem(relay.url, session["ticket"], key, "a" * 32).json() == grant
    assert alice.session(session["id"])["state"] == "starting"
    assert alice.session(session["id"])["url"].endswith("?token=" + "a" * 32)


def test_a_ticket_with_anything_around_it_is_refused(relay: RelayProcess, alice: Api) -> None:
    session = alice.new_session()
    key = public_text(new_key())
    for wrapped in (" " + session["ticket"] + "\n", session["ticket"] + " ",
                    session["ticket"].upper()):
        resp = redeem(relay.url, wrapped, key)
        assert resp.status_code == 403 and "nothing around" in resp.json()["message"]
    assert alice.session(session["id"])["state"] == "waiting"
    assert redeem(relay.url, session["ticket"], key).status_code == 200  # exactly: yes


def test_addresses_come_from_configuration_never_from_host(relay: RelayProcess,
                                                           alice: Api) -> None:
    """The relay URL, the SSH host and the WebSocket URL a runner is told are the relay's
    own, whatever Host header the caller sends."""
    evil = {"Host": "evil.example:4444", "X-Forwarded-Host": "evil.example"}
    resp = alice("POST", "/api/sessions", json={}, headers=evil)
    assert resp.status_code == 201, resp.text
    session = resp.json()
    assert session["relay_url"] == relay.url
    grant = requests.post(relay.url + "/api/tickets/redeem", headers=evil, timeout=30, json={
        "ticket": session["ticket"], "public_key": public_text(new_key()),
        "notebook_token": "t" * 32}).json()
    assert grant["ssh"]["host"] == "127.0.0.1"
    assert grant["ssh"]["websocket"] == relay.url.replace("http", "ws", 1) + "/api/tunnel"
    assert grant["url"].startswith(relay.url + "/session/")
    listed = alice("GET", f"/api/sessions/{session['id']}", headers=evil).json()
    assert listed["url"].startswith(relay.url + "/session/")
    assert "evil" not in str(grant) + str(listed)


def test_a_configured_public_url_is_what_everyone_is_told(local_server: ServerProcess,
                                                          tmp_path) -> None:
    proc = RelayProcess(tmp_path / "state", local_server.url,
                        "--public-url", "https://relay.example.org",
                        "--ssh-advertise", "ssh.example.org:2222").start()
    try:
        api = Api(proc.url, local_server.token_for("alice"))
        session = api.new_session()
        assert session["relay_url"] == "https://relay.example.org"
        grant = redeem(proc.url, session["ticket"], public_text(new_key())).json()
        assert grant["ssh"]["host"] == "ssh.example.org" and grant["ssh"]["port"] == 2222
        assert grant["ssh"]["websocket"] == "wss://relay.example.org/api/tunnel"
    finally:
        proc.stop()


def test_only_the_relays_own_credentials_and_origin_count(relay: RelayProcess,
                                                          local_server: ServerProcess,
                                                          alice: Api) -> None:
    """Everest's ``access_token`` cookie is not a relay credential (a browser sends it to
    every port of Everest's host); a state-changing call from another origin is refused."""
    token = local_server.token_for("alice")
    by_cookie = requests.get(relay.url + "/api/sessions", cookies={"access_token": token},
                             timeout=30)
    assert by_cookie.status_code == 401
    page_cookie = requests.get(relay.url + "/api/sessions", cookies={"relay_token": token},
                               timeout=30)
    assert page_cookie.status_code == 200
    other_port = relay.url.rsplit(":", 1)[0] + f":{relay.http_port + 1}"
    for origin in ("http://evil.example", "null", other_port):
        resp = alice("POST", "/api/sessions", json={}, headers={"Origin": origin})
        assert resp.status_code == 403 and "may not change" in resp.json()["message"], origin
        resp = requests.post(relay.url + "/api/login", json={"username": "a", "password": "b"},
                             headers={"Origin": origin}, timeout=30)
        assert resp.status_code == 403
    for own in (relay.url, relay.url.replace("127.0.0.1", "localhost")):  # both loopback
        assert alice("POST", "/api/sessions", json={}, headers={"Origin": own}
                     ).status_code == 201
    assert alice("GET", "/api/sessions", headers={"Origin": "http://evil.example"}
                 ).status_code == 200  # reading is not changing (CORS keeps it unread)


def test_unknown_and_expired_tickets_are_refused(relay: RelayProcess, alice: Api) -> None:
    key = public_text(new_key())
    assert redeem(relay.url, "x" * 32, key).status_code == 403
    session = alice.new_session(ticket_ttl=0.2)
    alice.wait_state(session["id"], "expired")
    resp = redeem(relay.url, session["ticket"], key)
    assert resp.status_code == 403 and "expired" in resp.json()["message"]


def test_long_poll_answers_when_the_state_changes(relay: RelayProcess, alice: Api) -> None:
    session = alice.new_session()
    answer: dict = {}

    def poll() -> None:
        answer["body"] = alice("GET", f"/api/sessions/{session['id']}",
                               params={"state": "waiting", "wait": "60"}).json()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)  # let the poll reach the relay (if it does not, the test proves less)
    assert redeem(relay.url, session["ticket"], public_text(new_key())).status_code == 200
    thread.join(30)
    assert not thread.is_alive()
    assert answer["body"]["state"] == "starting"


def test_deleting_ends_the_session(relay: RelayProcess, alice: Api) -> None:
    session = alice.new_session()
    ended = alice("DELETE", f"/api/sessions/{session['id']}").json()
    assert ended["state"] == "ended"
    gone = Api(relay.url, None)("GET", f"/session/{session['id']}/lab")
    assert gone.status_code == 404 and "no live session" in gone.json()["message"]
    assert session["id"] not in [s["id"] for s in alice("GET", "/api/sessions").json()]
    everything = alice("GET", "/api/sessions", params={"all": "1"}).json()
    assert session["id"] in [s["id"] for s in everything]


def test_state_survives_a_relay_restart(local_server: ServerProcess, tmp_path) -> None:
    relay = RelayProcess(tmp_path / "state", local_server.url).start()
    try:
        api = Api(relay.url, local_server.token_for("alice"))
        enrolled, waiting = api.new_session(), api.new_session()
        key = public_text(new_key())
        assert redeem(relay.url, enrolled["ticket"], key).status_code == 200
        before = api.session(enrolled["id"])
        relay.stop()
        relay.start()
        after = api.session(enrolled["id"])
        assert after["state"] == "starting"
        assert after["url"] == before["url"]  # the same URL
        assert redeem(relay.url, enrolled["ticket"], public_text(new_key())).status_code == 403
        assert redeem(relay.url, waiting["ticket"], key).status_code == 200
    finally:
        relay.stop()


def test_the_api_says_who_it_is(relay: RelayProcess) -> None:
    info = Api(relay.url, None)("GET", "/api/relay").json()
    assert info["ssh_port"] == relay.ssh_port
    assert info["service"] == "everest-jupyter relay"


def test_a_session_whose_runner_is_gone_is_ended(local_server: ServerProcess,
                                                 tmp_path) -> None:
    relay = RelayProcess(tmp_path / "state", local_server.url, "--stale-after", "1").start()
    try:
        api = Api(relay.url, local_server.token_for("alice"))
        session = api.new_session()
        assert redeem(relay.url, session["ticket"], public_text(new_key())).status_code == 200
        api.wait_state(session["id"], "ended", timeout=30)  # never connected
    finally:
        relay.stop()


def test_the_relay_database_opens_no_notebook(relay: RelayProcess, alice: Api) -> None:
    # what a copy (or a backup) of the database would give: no notebook token
    session = alice.new_session()
    token = "n" * 20 + secrets.token_urlsafe(16)
    assert redeem(relay.url, session["ticket"], public_text(new_key()), token).status_code \
        == 200
    assert alice.session(session["id"])["url"].endswith("?token=" + token)  # still served
    stored = b"".join(p.read_bytes() for p in relay.state_dir.glob("relay.sqlite*"))
    assert token.encode() not in stored
    assert (relay.state_dir / "state_key").stat().st_mode & 0o777 == 0o600


def test_the_runner_reports_when_the_session_ends(relay: RelayProcess, alice: Api,
                                                  bob: Api) -> None:
    session = alice.new_session()
    sid = session["id"]
    assert alice.session(sid)["time_left"] is None  # nothing reported yet
    resp = redeem(relay.url, session["ticket"], public_text(new_key()),
                  runner={"hostname": "test", "time_left": {"time_limit": 600, "idle": 120}})
    grant = resp.json()
    view = alice.session(sid)
    assert view["ends_by"] == "idle timeout" and 100 <= view["time_left"] <= 120
    assert abs(view["ends_at"] - (time.time() + view["time_left"])) < 5

    path = f"/api/sessions/{sid}/deadlines"
    anyone = Api(relay.url, None)
    wrong = anyone("POST", path, json={"end_token": "0" * 64, "time_limit_left": 1,
                                       "idle_left": None})
    assert wrong.status_code == 403 and wrong.json()["message"]
    for bad in ({"time_limit_left": -1}, {"idle_left": "soon"}, {"idle_left": float("1e12")},
                {"end_token": 5}):
        body = {"end_token": grant["end_token"], "time_limit_left": 1, **bad}
        answer = anyone("POST", path, json=body)
        assert answer.status_code == 400 and answer.json()["message"], bad
    assert alice.session(sid)["ends_by"] == "idle timeout"  # nothing half-taken

    moved = anyone("POST", path, json={"end_token": grant["end_token"],
                                       "time_limit_left": 50, "idle_left": 500})
    assert moved.status_code == 200 and moved.json()["ends_by"] == "time limit"
    view = alice.session(sid)
    assert view["ends_by"] == "time limit" and 40 <= view["time_left"] <= 50
    never = anyone("POST", path, json={"end_token": grant["end_token"],
                                       "time_limit_left": None, "idle_left": None})
    assert never.json()["time_left"] is None and alice.session(sid)["time_left"] is None
    assert bob("GET", f"/api/sessions/{sid}").status_code == 404  # the owner's view only

    # the banner's question needs the key the relay puts into the session's pages
    for key in ("", "0" * 32, "1" * 32):  # one keep-alive connection: errors keep it usable
        asked = anyone("GET", f"/session/{sid}/_everest/time-left", params={"key": key})
        assert asked.status_code == 403 and asked.json()["message"]
    for other in ("/session/0123456789abcdef01234567/_everest/time-left",
                  f"/session/{sid}/lab/_everest/time-left", "/user/nobody/_everest/time-left"):
        assert anyone("GET", other, params={"key": "0" * 32}).status_code == 404, other
    alice("DELETE", f"/api/sessions/{sid}")
    assert alice.session(sid)["time_left"] is None  # an ended session ends nothing more


def test_a_redeem_with_malformed_deadlines_still_enrolls(relay: RelayProcess,
                                                          alice: Api) -> None:
    session = alice.new_session()
    resp = redeem(relay.url, session["ticket"], public_text(new_key()),
                  runner={"hostname": "test", "time_left": {"time_limit": "an hour"}})
    assert resp.status_code == 200
    assert alice.session(session["id"])["time_left"] is None


def test_the_runner_says_when_its_notebook_answers(relay: RelayProcess, alice: Api) -> None:
    session, other = alice.new_session(), alice.new_session()
    grant = redeem(relay.url, session["ticket"], public_text(new_key())).json()
    path = f"/api/sessions/{session['id']}/answering"
    anyone = Api(relay.url, None)
    for body in ({"end_token": "0" * 64}, {"end_token": grant["end_token"][:-1] + "x"}):
        wrong = anyone("POST", path, json=body)
        assert wrong.status_code == 403 and wrong.json()["message"]
    # one session's token is not another's
    elsewhere = anyone("POST", f"/api/sessions/{other['id']}/answering",
                       json={"end_token": grant["end_token"]})
    assert elsewhere.status_code == 403
    for body in ({}, {"end_token": 5}, b"{not json"):
        bad = anyone("POST", path, **({"data": body} if isinstance(body, bytes)
                                      else {"json": body}))
        assert bad.status_code == 400 and bad.json()["message"], body
    # before the tunnel is up there is no probe to hurry: taken, nothing changes
    said = anyone("POST", path, json={"end_token": grant["end_token"]})
    assert said.status_code == 200
    assert said.json() == {"session_id": session["id"], "state": "starting"}
    assert alice.session(session["id"])["state"] == "starting"
