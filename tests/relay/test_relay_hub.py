"""Hub mode of the relay: a session made for a JupyterHub's single-user server takes the
hub's prefix and environment; the environment reaches only the runner that redeems the
ticket (never the API's answers, never the store once the session ends); such a session —
and only such a session — may open the relay's configured hub API address through its SSH
connection, and nothing else."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import asyncssh
import pytest
import requests

from tests.harness.relay import RelayProcess
from tests.harness.runner import FakeRunner, new_key, public_text, redeem
from tests.harness.server import ServerProcess
from tests.session.helpers import Api, echo_server, status_server

HUB_ENV = {"JUPYTERHUB_API_TOKEN": "hub-secret-" + "s" * 20, "JUPYTERHUB_CLIENT_ID":
           "jupyterhub-user-alice", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}


@pytest.fixture(scope="module")
def hub_api() -> Iterator[int]:
    """A stand-in for the hub's API: answers ``GET /hub/api/api/status`` with a token."""
    port, stop = status_server("/hub/api/", "hubtoken")
    try:
        yield port
    finally:
        stop()


@pytest.fixture(scope="module")
def relay(real_components: None, local_server: ServerProcess, hub_api: int,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("relay") / "state", local_server.url,
                        "--hub-api", f"127.0.0.1:{hub_api}", "--hub-service-account", "bob")
    try:
        yield proc.start()
    finally:
        proc.stop()


def _hub_session(api: Api, server: str | None = None, **extra) -> dict:
    """A hub-mode session for alice's server ``server`` (a fresh named one by default: a
    prefix is served by one live session at a time)."""
    server = uuid.uuid4().hex[:8] if server is None else server
    prefix = f"/user/alice/{server}/" if server else "/user/alice/"
    return api.new_session(mode="hub", label=f"hub1/alice/{server}", base_url=prefix,
                           hub_env=HUB_ENV, hub_forward=True, **extra)


def test_hub_fields_are_checked(alice: Api) -> None:
    bad = [
        {"mode": "hub", "base_url": "/user/alice", "hub_env": {}},
        {"mode": "hub", "base_url": "/user/../x/", "hub_env": {}},
        {"mode": "hub", "base_url": "/user/alice/", "hub_env": {"PATH": "/evil"}},
        {"mode": "hub", "base_url": "/user/alice/", "hub_env": {"JUPYTERHUB_X": 1}},
        {"mode": "hub", "base_url": "/user/alice/", "hub_forward": "yes"},
        {"mode": "lab", "hub_env": HUB_ENV},
        {"mode": "shell"},
    ]
    for body in bad:
        resp = alice("POST", "/api/sessions", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["message"]


def test_a_relay_without_hub_api_refuses_the_forward(local_server: ServerProcess,
                                                     tmp_path_factory) -> None:
    plain = RelayProcess(tmp_path_factory.mktemp("plain") / "state", local_server.url).start()
    try:
        api = Api(plain.url, local_server.token_for("alice"))
        resp = api("POST", "/api/sessions", json={
            "mode": "hub", "base_url": "/user/alice/", "hub_env": HUB_ENV, "hub_forward": True})
        assert resp.status_code == 400
        assert "--hub-api" in resp.json()["message"]
        assert api.new_session(mode="hub", base_url="/user/alice/", hub_env=HUB_ENV)["mode"] \
            == "hub"
    finally:
        plain.stop()


def test_the_hub_env_reaches_only_the_redeeming_runner(relay: RelayProcess, alice: Api,
                                                       hub_api: int) -> None:
    session = _hub_session(alice, "")
    assert "hub_env" not in session and HUB_ENV["JUPYTERHUB_API_TOKEN"] not in str(session)
    assert session["base_url"] == "/user/alice/"
    # the proxy target: the relay's one port (JupyterHub's proxy keeps only host and port
    # of a spawner's URL); the relay finds the session by the /user/alice/ prefix
    assert session["url"] == relay.url
    listed = alice("GET", "/api/sessions").text
    assert HUB_ENV["JUPYTERHUB_API_TOKEN"] not in listed

    grant = redeem(relay.url, session["ticket"], public_text(new_key())).json()
    assert grant["mode"] == "hub"
    assert grant["hub"] == {"env": HUB_ENV, "api": {"host": "127.0.0.1", "port": hub_api}}
    assert grant["base_url"] == "/user/alice/"
    assert alice("POST", "/api/sessions", json={  # one live session per prefix
        "mode": "hub", "base_url": "/user/alice/", "hub_env": {}}).status_code == 409

    # once ended, the secrets are gone from the relay's state too
    alice("DELETE", f"/api/sessions/{session['id']}")
    with sqlite3.connect(relay.state_dir / "relay.sqlite") as db:
        row = db.execute("SELECT hub_env FROM sessions WHERE id=?", (session["id"],)).fetchone()
    assert row == (None,)


def _enrolled(relay: RelayProcess, session: dict, peer: FakeRunner):
    key = new_key()
    grant = redeem(relay.url, session["ticket"], public_text(key)).json()
    return grant, peer.connect(relay.ssh_port, session["id"], key, grant["host_key"])


def _http_get(peer: FakeRunner, conn, port: int, path: str, token: str) -> bytes:
    async def get() -> bytes:
        reader, writer = await conn.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.0\r\nAuthorization: token {token}\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data

    return peer.run(get())


def test_a_hub_session_reaches_the_hub_api_and_nothing_else(
        relay: RelayProcess, alice: Api, hub_api: int, ssh_peer: FakeRunner,
        local_server: ServerProcess) -> None:
    grant, conn = _enrolled(relay, _hub_session(alice), ssh_peer)
    try:
        answer = _http_get(ssh_peer, conn, hub_api, "/hub/api/api/status", "hubtoken")
        assert answer.startswith(b"HTTP/1.0 200")
        server_port = int(local_server.url.rsplit(":", 1)[1])
        for port in (server_port, relay.http_port):
            with pytest.raises(asyncssh.ChannelOpenError):
                _http_get(ssh_peer, conn, port, "/", "x")
        with pytest.raises(asyncssh.ChannelOpenError):  # the same port by another name
            ssh_peer.run(conn.open_connection("localhost", hub_api))
    finally:
        ssh_peer.close(conn)


def test_a_lab_session_cannot_reach_the_hub_api(relay: RelayProcess, alice: Api,
                                                hub_api: int, ssh_peer: FakeRunner) -> None:
    grant, conn = _enrolled(relay, alice.new_session(), ssh_peer)
    try:
        assert "hub" not in grant
        with pytest.raises(asyncssh.ChannelOpenError):
            _http_get(ssh_peer, conn, hub_api, "/hub/api/api/status", "hubtoken")
    finally:
        ssh_peer.close(conn)


def test_a_hub_session_without_forward_cannot_reach_it(relay: RelayProcess, alice: Api,
                                                       hub_api: int,
                                                       ssh_peer: FakeRunner) -> None:
    session = alice.new_session(mode="hub", base_url="/user/alice/", hub_env=HUB_ENV)
    grant, conn = _enrolled(relay, session, ssh_peer)
    try:
        assert grant["hub"]["api"] is None
        with pytest.raises(asyncssh.ChannelOpenError):
            _http_get(ssh_peer, conn, hub_api, "/hub/api/api/status", "hubtoken")
    finally:
        ssh_peer.close(conn)


def test_only_its_user_or_a_hub_service_account_claims_a_prefix(alice: Api,
                                                                bob: Api) -> None:
    body = {"mode": "hub", "base_url": "/user/bob/x/", "hub_env": {}}
    resp = alice("POST", "/api/sessions", json=body)
    assert resp.status_code == 403 and "--hub-service-account" in resp.json()["message"]
    assert bob.new_session(**body)["base_url"] == "/user/bob/x/"  # their own
    served = bob.new_session(mode="hub", base_url="/user/alice/svc/", hub_env={})
    assert served["base_url"] == "/user/alice/svc/"  # bob is this relay's service account


def test_a_hub_session_is_served_at_its_prefix_with_the_hubs_credentials(
        relay: RelayProcess, alice: Api, ssh_peer: FakeRunner) -> None:
    session = _hub_session(alice, "echo")
    grant, conn = _enrolled(relay, session, ssh_peer)
    notebook_port, stop = echo_server("/user/alice/echo/", "unused")
    try:
        ssh_peer.run(conn.forward_remote_port(grant["forward"]["host"],
                                              grant["forward"]["port"], "127.0.0.1",
                                              notebook_port))
        ready = alice.wait_state(session["id"], "ready")  # probed at its prefix + api
        # what JupyterHub's proxy sends for /user/alice/echo/lab to the target ready["url"]
        seen = requests.get(ready["url"] + "/user/alice/echo/lab?x=1", timeout=10, headers={
            "Authorization": "token hub-issued", "Cookie": "access_token=everest"}).json()
        assert seen["path"] == "/user/alice/echo/lab?x=1"
        headers = dict(seen["headers"])
        assert headers["Authorization"] == "token hub-issued"  # the hub's tokens pass
        assert "Cookie" not in headers  # Everest's never do
        missing = requests.get(ready["url"] + "/user/nobody/lab", timeout=10)
        assert missing.status_code == 404 and "no such relay endpoint" in missing.json()[
            "message"]
    finally:
        ssh_peer.close(conn)
        stop()
