"""Sign-ins through the hub's login form (EverestAuthenticator, behind the hub's real proxy)
cannot lock everyone out: the hub throttles per browser address itself (429 with
Retry-After), and with the local server's client-address key it names each browser's
address to the server, signed, so the server counts browsers, not the hub; Everest's 429
reaches the form as a 429 with its Retry-After.

Browsers are played by binding 127.0.0.x source addresses; the proxy reports them to the
hub in X-Forwarded-For, and the hub reaches Everest from 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import requests.adapters

from everest_app import client_address
from tests.harness.processes import client_from
from tests.harness.server import password_for
from tests.hub.helpers import EVEREST_CONFIG, HubStack


def _config(key_file: str, attempts: int) -> str:
    return (f"c.EverestAuthenticator.client_address_key_file = {key_file!r}\n"
            f"c.EverestAuthenticator.login_attempts = {attempts}\n")


@pytest.fixture(scope="module")
def stack(real_components: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    folder = tmp_path_factory.mktemp("hub-sign-in")
    # the server makes an address wait after 10 failures for one user; the hub's own
    # throttle is set out of the way first, so what is shown is what the server counts
    key_file = str(folder / "everest" / client_address.KEY_FILE)
    stack = HubStack(folder, extra_config=_config(key_file, 1000),
                     server_args=["--login-attempts", "10", "--login-backoff-max", "60"])
    try:
        yield stack.start()
    finally:
        stack.close()


def _sign_in(stack: HubStack, address: str, user: str, password: str) -> requests.Response:
    http = client_from(address)
    http.get(stack.hub.url + "/hub/login", timeout=30)
    return http.post(stack.hub.url + "/hub/login", timeout=60, allow_redirects=False, data={
        "username": user, "password": password, "_xsrf": http.cookies["_xsrf"]})


def _guess_until_refused(stack: HubStack, address: str, user: str,
                         at_most: int = 30) -> tuple[int, requests.Response]:
    """Wrong passwords from ``address`` until one is answered 429 (each wait doubles, so
    one soon outlasts a request); returns how many were checked (403) and the 429."""
    checked = 0
    for _ in range(at_most):
        answer = _sign_in(stack, address, user, "guess")
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
            return checked, answer
        assert answer.status_code == 403, answer.text[-2000:]
        checked += 1
    raise AssertionError(f"{at_most} wrong passwords from {address}, none refused")


def test_guesses_from_two_addresses_do_not_stop_a_third(stack: HubStack) -> None:
    checked = 0
    for guesser in ("127.0.0.60", "127.0.0.61"):
        wrong, refused = _guess_until_refused(stack, guesser, "alice")
        checked += wrong
        # Everest's 429, on the hub's form (it was a 503)
        assert "Everest: too many failed sign-ins" in refused.text
    assert checked >= 20
    # a third address signs in at once: the server counted each browser, not the hub
    # (with the key unset it counted all of them against the hub's 127.0.0.1)
    third = _sign_in(stack, "127.0.0.62", "alice", password_for("alice"))
    assert third.status_code == 302, third.text[-2000:]


def test_the_hub_throttles_its_form_per_address_itself(stack: HubStack) -> None:
    # as in front of a real Everest: no key, and the hub's own throttle at 2
    stack.hub.stop()
    stack.hub.write_config(EVEREST_CONFIG + "c.EverestAuthenticator.login_attempts = 2\n")
    stack.hub.start()
    checked, refused = _guess_until_refused(stack, "127.0.0.65", "bob")
    assert checked < 10  # the hub's limit, not the server's
    assert "Too many failed sign-ins from your address" in refused.text
    assert _sign_in(stack, "127.0.0.66", "bob", password_for("bob")).status_code == 302
    # another user from the guessing address is not held up either
    assert _sign_in(stack, "127.0.0.65", "alice", password_for("alice")).status_code == 302


def test_a_key_file_it_cannot_use_is_refused_when_configured(tmp_path) -> None:
    from traitlets import TraitError

    from launcher.hub.authenticator import EverestAuthenticator

    with pytest.raises(TraitError, match="cannot read the client-address key"):
        EverestAuthenticator(client_address_key_file=str(tmp_path / "missing.key"))
    (tmp_path / "short.key").write_bytes(b"short")
    with pytest.raises(TraitError, match="too short"):
        EverestAuthenticator(client_address_key_file=str(tmp_path / "short.key"))
    key = tmp_path / "client-address.key"
    client_address.create_key(key)
    assert EverestAuthenticator(client_address_key_file=str(key)).client_address_key_file
