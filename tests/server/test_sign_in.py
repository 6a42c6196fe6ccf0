"""Sign-in hardening: guessing is slowed per user and address (429 with Retry-After), an
unknown user name costs the same scrypt work as a known one, a password reset revokes the
user's tokens (at the server, and at the relay within seconds), and the login page never
sends anyone off-site."""

from __future__ import annotations

import hashlib

import pytest
import requests

from everest_local import auth
from everest_local.auth import add_user
from tests.fixtures.local_server import ServerProcess, password_for
from tests.session.helpers import Api, RelayProcess, wait_for

LOGIN = "/api/auth/access_token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("sign-in") / "data",
                         users=("alice", "bob", "carol", "dave"),
                         extra_args=["--login-attempts", "3", "--login-backoff-max", "3"])
    try:
        yield proc.start()
    finally:
        proc.close()


def _login(server: ServerProcess, user: str, password: str) -> requests.Response:
    return requests.post(server.url + LOGIN, json={"username": user, "password": password},
                         timeout=30)


def test_repeated_failures_make_the_next_try_wait(server: ServerProcess) -> None:
    for _ in range(3):
        assert _login(server, "alice", "guess").status_code == 401
    # now even the right password is refused, before it is checked, until the wait is over
    locked = _login(server, "alice", password_for("alice"))
    assert locked.status_code == 429
    assert "too many failed sign-ins" in locked.json()["message"]
    retry = int(locked.headers["Retry-After"])
    assert 1 <= retry <= 3
    # another user from the same address is not locked out by alice's guesser
    assert _login(server, "bob", password_for("bob")).status_code == 200
    wait_for(lambda: _login(server, "alice", password_for("alice")).status_code == 200,
             timeout=retry + 10, interval=0.5, what="alice's wait to end")


def test_an_unknown_user_costs_the_same_scrypt_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(kwargs["n"])
        return real(*args, **kwargs)

    stored = auth.hash_password("right")
    auth.check_password("x", None)  # the dummy hash is made once, on first use
    monkeypatch.setattr(hashlib, "scrypt", counting)
    assert auth.check_password("wrong", stored) is False
    assert auth.check_password("right", stored) is True
    assert auth.check_password("right", None) is False  # an unknown user
    assert auth.check_password("right", "garbage") is False
    assert calls == [2**14] * 4  # one full-strength scrypt each


def test_a_password_reset_revokes_the_users_tokens(server: ServerProcess) -> None:
    token = _login(server, "carol", password_for("carol")).json()["access_token"]
    other = _login(server, "dave", password_for("dave")).json()["access_token"]

    def status(tok: str) -> int:
        return requests.get(server.url + "/api/jobs", timeout=10,
                            headers={"Authorization": f"Bearer {tok}"}).status_code

    assert status(token) == 200
    add_user(server.data_dir, "carol", "a-new-password-456")  # what `server add-user` does
    wait_for(lambda: status(token) == 401, timeout=15, what="the old token to be refused")
    assert status(other) == 200  # only carol's tokens
    assert _login(server, "carol", "a-new-password-456").status_code == 200


def test_the_relay_stops_accepting_a_revoked_token_within_seconds(
        server: ServerProcess, tmp_path) -> None:
    relay = RelayProcess(tmp_path / "relay", server.url).start()
    try:
        token = _login(server, "dave", password_for("dave")).json()["access_token"]
        api = Api(relay.url, token)
        assert api("GET", "/api/sessions").status_code == 200  # now in the relay's cache
        revoked = requests.delete(server.url + LOGIN, timeout=10,
                                  headers={"Authorization": f"Bearer {token}"})
        assert revoked.status_code == 200
        wait_for(lambda: api("GET", "/api/sessions").status_code == 401, timeout=15,
                 interval=0.5, what="the relay to refuse the revoked token")
    finally:
        relay.stop()


@pytest.mark.parametrize("next_value", ["/%09/127.0.0.1:9/x", "/%0a/127.0.0.1:9/x",
                                        "/%0d/127.0.0.1:9/x", "/%5C127.0.0.1:9/x",
                                        "//127.0.0.1:9/x", "https://127.0.0.1:9/x"])
def test_the_login_page_drops_an_offsite_next(server: ServerProcess, next_value: str) -> None:
    resp = requests.get(f"{server.url}/login?next={next_value}", allow_redirects=False,
                        timeout=10)
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    kept = requests.get(f"{server.url}/login?next=/jobs%3Fx%3D1", allow_redirects=False,
                        timeout=10)
    assert kept.status_code == 200
