"""Session options are checked once for every way in (the relay's API and the local
server's ``jupyter-session`` form), tickets are usable only by their owner, and the relay's
API refuses bad JSON with a 400 naming the problem."""

from __future__ import annotations

import json

import pytest
import requests

from tests.harness.server import ServerProcess
from tests.session.helpers import Api, wait_for

BAD_DEFAULT_URLS = ["//evil.example/", "/lab?next=x", "/lab#x", "/lab/../../x", "lab",
                    "https://evil.example/lab"]


def _relay_url(server: ServerProcess) -> str:
    """The server's embedded relay, once it has started."""
    info = server.data_dir / "relay.json"
    wait_for(info.exists, what="the embedded relay")
    return json.loads(info.read_text())["url"]


def _submit(server: ServerProcess, user: str, inputs: dict) -> requests.Response:
    return requests.post(server.url + "/api/apps/jupyter-session", json={"inputs": inputs},
                         headers={"Authorization": f"Bearer {server.token_for(user)}"},
                         timeout=30)


@pytest.mark.parametrize("default_url", BAD_DEFAULT_URLS)
def test_both_ways_in_refuse_the_same_default_urls(local_server: ServerProcess,
                                                   default_url: str) -> None:
    relay = Api(_relay_url(local_server), local_server.token_for("alice"))
    resp = relay("POST", "/api/sessions", json={"default_url": default_url})
    assert resp.status_code == 400 and "default_url" in resp.json()["message"]
    form = _submit(local_server, "alice", {"relay": "", "ticket": "", "default_url": default_url})
    assert form.status_code == 400 and "default_url" in form.json()["message"]


def test_a_path_with_a_notebook_is_a_fine_default_url(local_server: ServerProcess) -> None:
    relay = Api(_relay_url(local_server), local_server.token_for("alice"))
    session = relay.new_session(default_url="/lab/tree/analysis.ipynb")
    assert session["default_url"] == "/lab/tree/analysis.ipynb"
    relay("DELETE", f"/api/sessions/{session['id']}")


def test_another_users_ticket_is_refused(local_server: ServerProcess) -> None:
    relay_url = _relay_url(local_server)
    alice = Api(relay_url, local_server.token_for("alice"))
    session = alice.new_session(label="alice's")
    resp = _submit(local_server, "bob", {"relay": relay_url, "ticket": session["ticket"]})
    assert resp.status_code == 400 and "not a ticket of yours" in resp.json()["message"]
    after = alice.session(session["id"])
    assert after["state"] == "waiting" and after["job_id"] is None  # nothing linked
    alice("DELETE", f"/api/sessions/{session['id']}")


@pytest.mark.parametrize("wrap", [" {}\n", "{}\n", "\t{}", "{} "])
def test_a_ticket_is_compared_exactly_as_minted(local_server: ServerProcess,
                                                wrap: str) -> None:
    """Another user's ticket with whitespace around it (which the runner trims) is no ticket
    at all: the form refuses it instead of passing it on unrecognised."""
    relay_url = _relay_url(local_server)
    alice = Api(relay_url, local_server.token_for("alice"))
    session = alice.new_session(label="alice's")
    resp = _submit(local_server, "bob", {"relay": relay_url,
                                         "ticket": wrap.format(session["ticket"])})
    assert resp.status_code == 400 and "not a relay ticket" in resp.json()["message"]
    assert alice.session(session["id"])["state"] == "waiting"
    alice("DELETE", f"/api/sessions/{session['id']}")


@pytest.mark.parametrize(("body", "named"), [
    (b'{"label": NaN}', "NaN"),
    (b'{"ticket_ttl": 1e999}', "too large"),
    (b'{"label": "\\ud800"}', "lone surrogate"),
    (b"[" * 3000 + b"]" * 3000, "nested deeper"),
])
def test_the_relay_refuses_json_it_cannot_store(local_server: ServerProcess, body: bytes,
                                                named: str) -> None:
    relay = Api(_relay_url(local_server), local_server.token_for("alice"))
    resp = relay("POST", "/api/sessions", data=body)
    assert resp.status_code == 400 and named in resp.json()["message"]
    # the runner's side too, which needs no token
    resp = requests.post(relay.url + "/api/tickets/redeem", data=body, timeout=30)
    assert resp.status_code == 400 and named in resp.json()["message"]


def test_the_old_plugin_name_still_loads_the_relay_for_one_release() -> None:
    import importlib
    import sys
    import warnings

    from launcher.relay import plugin

    sys.modules.pop("launcher.relay_plugin", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("launcher.relay_plugin")
    assert old.setup is plugin.setup
    assert any("launcher.relay.plugin" in str(w.message) for w in caught)
