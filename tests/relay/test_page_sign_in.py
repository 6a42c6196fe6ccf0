"""Sign-ins through the relay's page cannot lock everyone out: the relay throttles its own
``POST /api/login`` per browser address (429 with Retry-After, before Everest is asked), and
tells the local server each browser's address, signed with the server's client-address key,
so the server's per-address throttle counts browsers, not the relay. A forged address header
gains nothing; Everest's 429 reaches the browser as a 429 with its Retry-After.

Browsers are played by binding 127.0.0.x source addresses (as tests/server/test_sign_in.py
does); the relay itself reaches the server from 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import requests
import requests.adapters
from tornado.httputil import HTTPHeaders, HTTPServerRequest

from everest_app import client_address
from launcher.relay.config import RelayConfig
from launcher.relay.sign_in import PageSignIn
from tests.fixtures.waiting import wait_for
from tests.harness.processes import client_from
from tests.harness.relay import RelayProcess
from tests.harness.server import ServerProcess, password_for

SERVER_LOGIN = "/api/auth/access_token"
RELAY_LOGIN = "/api/login"


def _login(url: str, address: str, user: str, password: str,
           headers: dict[str, str] | None = None) -> requests.Response:
    return client_from(address).post(url, json={"username": user, "password": password},
                                     headers=headers or {}, timeout=30)


@pytest.fixture(scope="module")
def server(real_components: None, tmp_path_factory: pytest.TempPathFactory):
    # the server makes an address wait after 10 failures for one user (40 for any users);
    # locking an account needs 10 guessing addresses (the default)
    proc = ServerProcess(tmp_path_factory.mktemp("page-sign-in") / "data",
                         users=("alice", "bob", "carol", "dave", "erin"),
                         extra_args=["--plugin", "launcher.relay.plugin",
                                     "--login-attempts", "10", "--login-backoff-max", "60"])
    try:
        yield proc.start()
    finally:
        proc.close()


def _embedded_relay(server: ServerProcess) -> str:
    info = server.data_dir / "relay.json"
    wait_for(lambda: info.exists() and json.loads(info.read_text()).get("pid") ==
             server.proc.pid, 30, "the embedded relay")
    return json.loads(info.read_text())["url"]


@pytest.fixture
def relay_of(server: ServerProcess, tmp_path: Path):
    """A relay: ``embedded`` (the server's plugin, which reads the server's key itself) or
    ``own`` (``python -m launcher.relay`` with the options given)."""
    started: list[RelayProcess] = []

    def make(kind: str, *extra: str) -> str:
        if kind == "embedded":
            return _embedded_relay(server)
        relay = RelayProcess(tmp_path / f"relay-{len(started)}", server.url, *extra)
        started.append(relay)
        return relay.start().url

    yield make
    for relay in started:
        relay.stop()


def _guess_until_refused(url: str, address: str, user: str, headers=lambda n: {},
                         at_most: int = 30) -> tuple[int, requests.Response]:
    """Wrong passwords from ``address`` until one is answered 429 (the throttle's wait
    doubles with each failure checked, so one soon outlasts a request); returns how many
    were checked (401) and the 429. Fails if none is refused."""
    checked = 0
    for n in range(at_most):
        answer = _login(url, address, user, "guess", headers=headers(n))
        if answer.status_code == 429:
            return checked, answer
        assert answer.status_code == 401, answer.text
        checked += 1
    raise AssertionError(f"{at_most} wrong passwords from {address}, none refused")


def _assert_retry_after(answer: requests.Response, text: str) -> None:
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert text in answer.json()["message"], answer.text


@pytest.mark.parametrize("kind", ["embedded", "own"])
def test_guesses_through_the_relay_page_from_two_addresses_do_not_stop_a_third(
        server: ServerProcess, relay_of, kind: str) -> None:
    user = {"embedded": "alice", "own": "bob"}[kind]
    base = {"embedded": 20, "own": 30}[kind]  # each run its own addresses
    key_file = str(server.data_dir / client_address.KEY_FILE)
    # the relay's own throttle is set out of the way: every guess reaches the server, so
    # this shows what the server counts
    relay = relay_of(kind, "--client-address-key-file", key_file, "--login-attempts", "1000")
    checked = 0
    for guesser in (f"127.0.0.{base}", f"127.0.0.{base + 1}"):
        wrong, refused = _guess_until_refused(relay + RELAY_LOGIN, guesser, user)
        checked += wrong
        # the server's 429 reaches the browser as a 429 with Retry-After (it was a 503)
        _assert_retry_after(refused, "too many failed sign-ins")
    assert checked >= 20
    # a third address signs in through the relay at once (before, the server counted all
    # of the guesses against 127.0.0.1, the relay: every relay sign-in of the user waited)
    third = _login(relay + RELAY_LOGIN, f"127.0.0.{base + 2}", user, password_for(user))
    assert third.status_code == 200, third.text
    assert third.json() == {"user": user}
    # and another user from a guessing address
    assert _login(relay + RELAY_LOGIN, f"127.0.0.{base}", "carol",
                  password_for("carol")).status_code == 200


def test_the_relay_throttles_its_page_per_browser_address(server: ServerProcess,
                                                          relay_of) -> None:
    # no key: as in front of a real Everest, the relay's own throttle is what protects
    relay = relay_of("own", "--login-attempts", "2", "--login-backoff-max", "60",
                     "--trusted-proxy", "127.0.0.45")
    url = relay + RELAY_LOGIN
    checked, refused = _guess_until_refused(url, "127.0.0.40", "dave")
    assert checked < 10  # the relay's limit (2), not the server's (10)
    _assert_retry_after(refused, "from your address")  # the relay's own answer
    # another browser is not held up
    assert _login(url, "127.0.0.41", "dave", password_for("dave")).status_code == 200
    # X-Forwarded-For from a peer that is no trusted proxy changes nothing: a guesser
    # naming a new address each time is still refused
    checked, refused = _guess_until_refused(
        url, "127.0.0.42", "dave",
        headers=lambda n: {"X-Forwarded-For": f"198.51.100.{n + 1}"})
    _assert_retry_after(refused, "from your address")
    assert _login(url, "127.0.0.41", "dave", password_for("dave")).status_code == 200
    # from the trusted proxy, the address it names counts, not the proxy's
    checked, refused = _guess_until_refused(
        url, "127.0.0.45", "dave",
        headers=lambda n: {"X-Forwarded-For": "6.6.6.6, 198.51.100.200, 127.0.0.45"})
    _assert_retry_after(refused, "from your address")
    assert _login(url, "127.0.0.45", "dave", password_for("dave"),
                  headers={"X-Forwarded-For": "198.51.100.201"}).status_code == 200


def test_a_forged_client_address_header_is_ignored(server: ServerProcess) -> None:
    key = client_address.read_key(server.data_dir / client_address.KEY_FILE)
    url = server.url + SERVER_LOGIN
    other = b"x" * 32

    def forged(n: int) -> dict[str, str]:
        address = f"198.51.100.{n + 1}"  # a new address each try
        value = [
            address,  # bare
            client_address.sign(other, address, "erin"),  # under another key
            client_address.sign(key, address, "alice"),  # signed for another user
            client_address.sign(key, address, "erin", now=0),  # long expired
            client_address.sign(key, address, "erin")[:-1] + "0",  # altered
            client_address.sign(key, "203.0.113.9", "erin").replace("203.0.113.9", address),
        ][n % 6]
        return {client_address.HEADER: value}

    # were any of them believed, each try would count against a fresh address and never
    # wait; ignored, they all count against the peer, which is refused after 10
    checked, refused = _guess_until_refused(url, "127.0.0.50", "erin", headers=forged)
    assert checked >= 10
    _assert_retry_after(refused, "too many failed sign-ins")
    # odd bytes in the header, or in a device cookie, are a refusal, never a 500
    for odd in ({client_address.HEADER: "v1 198.51.100.1 \u00b2 \u00e9".encode("latin-1")},
                {"Cookie": "everest_device=v1.erin.dev.\u00e9\u00e9".encode("latin-1")}):
        answer = client_from("127.0.0.52").post(url, timeout=30, data=json.dumps(
            {"username": "erin", "password": "guess"}), headers={
            "Content-Type": "application/json", **odd})
        assert answer.status_code == 401, (odd, answer.text)
    # a genuine header counts against the address it names, and not against the peer
    checked, refused = _guess_until_refused(
        url, "127.0.0.51", "erin",
        headers=lambda n: {client_address.HEADER: client_address.sign(
            key, "198.51.100.250", "erin")})
    assert checked >= 10
    assert _login(url, "127.0.0.51", "erin", password_for("erin")).status_code == 200


def test_the_server_makes_its_client_address_key_private(server: ServerProcess) -> None:
    mode = os.stat(server.data_dir / client_address.KEY_FILE).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert len(client_address.read_key(server.data_dir / client_address.KEY_FILE)) == 32


# -- without processes -------------------------------------------------------------------------


def test_a_signed_address_is_good_for_its_user_and_a_minute() -> None:
    key = b"k" * 32
    value = client_address.sign(key, "203.0.113.7", "erin", now=1000)
    assert client_address.verify(key, value, "erin", now=1030) == "203.0.113.7"
    assert client_address.verify(key, value, "erin", now=1061) is None
    assert client_address.verify(key, value, "erin", now=939) is None  # from the future
    assert client_address.verify(key, value, "frank", now=1000) is None
    assert client_address.verify(b"j" * 32, value, "erin", now=1000) is None
    unaddressed = client_address.sign(key, "not-an-address", "erin", now=1000)
    assert client_address.verify(key, unaddressed, "erin", now=1000) is None
    assert client_address.verify(key, None, "erin") is None
    # odd text is refused, never an error (the header is anyone's to send)
    mac = value.rsplit(" ", 1)[1]
    for odd in (f"v1 203.0.113.7 \u00b2 {mac}", f"v1 203.0.113.7 {'9' * 5000} {mac}",
                "v1 203.0.113.7 1000 \u00e9" + mac[1:], "v1 \u00e9 1000 " + mac, "v1  1000 x",
                "v1 203.0.113.7 1000 " + mac.upper()):
        assert client_address.verify(key, odd, "erin", now=1000) is None, odd


def test_a_relay_refuses_a_key_file_it_cannot_use(tmp_path: Path) -> None:
    from traitlets import TraitError

    with pytest.raises(TraitError, match="cannot read the client-address key"):
        RelayConfig(client_address_key_file=tmp_path / "missing.key")
    (tmp_path / "short.key").write_bytes(b"short")
    with pytest.raises(TraitError, match="too short"):
        RelayConfig(client_address_key_file=tmp_path / "short.key")
    with pytest.raises(TraitError, match="not an address or network"):
        RelayConfig(trusted_proxies=["proxy.example"])


def _request(peer: str, forwarded: list[str]) -> HTTPServerRequest:
    headers = HTTPHeaders()
    for value in forwarded:
        headers.add("X-Forwarded-For", value)
    request = HTTPServerRequest(method="POST", uri="/api/login", headers=headers)
    request.remote_ip = peer
    return request


def test_x_forwarded_for_is_read_only_through_trusted_proxies() -> None:
    sign_in = PageSignIn(RelayConfig(trusted_proxies=["10.0.0.0/24", "127.0.0.1"]))
    assert sign_in.client_address(_request("192.0.2.1", ["198.51.100.1"])) == "192.0.2.1"
    assert sign_in.client_address(_request("10.0.0.5", ["198.51.100.1"])) == "198.51.100.1"
    # the rightmost hop that is not a trusted proxy; what the client put left of it is not
    assert sign_in.client_address(_request(
        "127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.0.0.7"])) == "198.51.100.1"
    assert sign_in.client_address(_request(
        "10.0.0.5", ["6.6.6.6", "198.51.100.2"])) == "198.51.100.2"
    # garbage stops the walk at the last trusted hop; no header: the proxy itself
    assert sign_in.client_address(_request("10.0.0.5", ["junk, 10.0.0.9"])) == "10.0.0.9"
    assert sign_in.client_address(_request("10.0.0.5", [])) == "10.0.0.5"
