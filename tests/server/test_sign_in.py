"""Sign-in hardening: guessing is slowed per user and address (429 with Retry-After), an
account is locked only by guesses from many addresses and never for its user's known device
(OWASP device cookies), an
unknown user name costs the same scrypt work as a known one, a password reset revokes the
user's tokens (at the server, and at the relay within seconds), and the login page never
sends anyone off-site."""

from __future__ import annotations

import hashlib
import time

import pytest
import requests
import requests.adapters

from everest_local import auth
from everest_local.auth import DEVICE_COOKIE, SignInThrottle, add_user
from tests.harness.processes import client_from
from tests.harness.relay import RelayProcess
from tests.harness.server import ServerProcess, password_for
from tests.session.helpers import Api, wait_for

LOGIN = "/api/auth/access_token"


@pytest.fixture(scope="module")
def server(real_components: None, tmp_path_factory: pytest.TempPathFactory):
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


@pytest.fixture(scope="module")
def lockable(real_components: None, tmp_path_factory: pytest.TempPathFactory):
    # accounts lock once 5 addresses have failed for them; waits grow to 60 s, so a lock
    # is still on when the test looks
    proc = ServerProcess(tmp_path_factory.mktemp("lockable") / "data",
                         users=("erin", "frank"),
                         extra_args=["--login-attempts", "3", "--login-backoff-max", "60",
                                     "--login-lock-addresses", "5"])
    try:
        yield proc.start()
    finally:
        proc.close()


def _guess(server: ServerProcess, addresses: list[str], tries: int) -> int:
    """``tries`` wrong passwords for erin from each address, taking turns and waiting
    as each 429's Retry-After asks (a patient attacker); returns how many were checked."""
    clients = [client_from(a) for a in addresses]
    checked = 0
    for _ in range(tries):
        for client in clients:
            while True:
                resp = client.post(server.url + LOGIN, timeout=30,
                                   json={"username": "erin", "password": "guess"})
                if resp.status_code != 429:
                    break
                time.sleep(float(resp.headers["Retry-After"]))
            assert resp.status_code == 401, resp.text
            checked += 1
    return checked


def test_guessing_from_a_few_addresses_locks_no_one_out_and_a_device_cookie_passes_a_lock(
        lockable: ServerProcess) -> None:
    right = {"username": "erin", "password": password_for("erin")}
    erin = client_from("127.0.0.9")  # erin's own machine, signed in before the attack
    assert erin.post(lockable.url + LOGIN, json=right, timeout=30).status_code == 200
    assert erin.cookies.get(DEVICE_COOKIE, "").startswith("v1.erin.")

    assert _guess(lockable, [f"127.0.0.{n}" for n in (2, 3, 4, 5)], 5) == 20
    # 20 wrong passwords from 4 addresses: erin signs in, from a fresh address too
    assert erin.post(lockable.url + LOGIN, json=right, timeout=30).status_code == 200
    assert client_from("127.0.0.6").post(lockable.url + LOGIN, json=right,
                                         timeout=30).status_code == 200
    # the guessing addresses themselves wait, even with the right password
    guesser = client_from("127.0.0.2")
    assert guesser.post(lockable.url + LOGIN, json=right, timeout=30).status_code == 429

    # one guess from a fifth address: now many addresses have guessed, the account is locked
    _guess(lockable, ["127.0.0.7"], 1)
    fresh = client_from("127.0.0.8").post(lockable.url + LOGIN, json=right, timeout=30)
    assert fresh.status_code == 429 and "too many failed sign-ins" in fresh.json()["message"]
    # ... except for erin's known device, even from a guessing address
    assert erin.post(lockable.url + LOGIN, json=right, timeout=30).status_code == 200
    from_guesser = client_from("127.0.0.2")
    from_guesser.cookies.set(DEVICE_COOKIE, erin.cookies[DEVICE_COOKIE])
    assert from_guesser.post(lockable.url + LOGIN, json=right, timeout=30).status_code == 200
    # a cookie of another user's, or an altered one, is no key to erin's account
    frank = client_from("127.0.0.10")
    assert frank.post(lockable.url + LOGIN, timeout=30, json={
        "username": "frank", "password": password_for("frank")}).status_code == 200
    genuine = erin.cookies[DEVICE_COOKIE]
    for forged in (frank.cookies[DEVICE_COOKIE],
                   frank.cookies[DEVICE_COOKIE].replace("v1.frank.", "v1.erin."),
                   genuine[:-1] + ("1" if genuine.endswith("0") else "0")):
        other = client_from("127.0.0.11")
        other.cookies.set(DEVICE_COOKIE, forged)
        assert other.post(lockable.url + LOGIN, json=right, timeout=30).status_code == 429, \
            forged


def test_a_device_cookie_guesses_no_faster_than_an_address() -> None:
    throttle = SignInThrottle(attempts=3, backoff_max=60, lock_addresses=2)
    for _ in range(3):
        throttle.failed("erin", "127.0.0.2", device="d1", now=0.0)
    assert throttle.wait("erin", "127.0.0.2", device="d1", now=0.0) > 0
    assert throttle.wait("erin", "127.0.0.2", device="d2", now=0.0) == 0  # another device
    assert throttle.wait("erin", "127.0.0.2", now=0.0) == 0  # device failures lock no one
    # IPv6: one /64 is one guesser, however many of its addresses it uses
    for n in range(3):
        throttle.failed("frank", f"2001:db8::{n + 1}", now=0.0)
    assert throttle.wait("frank", "2001:db8::ffff", now=0.0) > 0
    assert throttle.wait("frank", "2001:db8:0:1::1", now=0.0) == 0
