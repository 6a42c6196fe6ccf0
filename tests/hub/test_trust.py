"""What a hub admin and its users are told, in a real JupyterHub with its proxy: an allow list
is honoured; a spawn that cannot work answers at once with the right status and says why (a
stopped Everest as Everest not answering, a wrong ``everest_url`` as such, a refused option as
a bad request); ``jupyterhub --help-all`` shows EverestSpawner's and EverestAuthenticator's
true defaults and marks the inherited options that do nothing here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.harness.processes import child_env, free_port
from tests.harness.server import password_for
from tests.hub.helpers import EVEREST_CONFIG, HubStack
from tests.session.helpers import Api, wait_for

# fast failures answer the spawn request itself (not a 202 and a progress stream)
_CONFIG = """
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 30}
c.EverestAuthenticator.allowed_users = {"bob"}
"""


@pytest.fixture(scope="module")
def stack(real_components: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    stack = HubStack(tmp_path_factory.mktemp("hub-trust"), extra_config=_CONFIG)
    try:
        yield stack.start()
    finally:
        stack.close()


def _sign_in(stack: HubStack, user: str) -> requests.Response:
    http = requests.Session()
    http.get(stack.hub.url + "/hub/login", timeout=30)
    return http.post(stack.hub.url + "/hub/login", timeout=60, allow_redirects=False, data={
        "username": user, "password": password_for(user), "_xsrf": http.cookies["_xsrf"]})


def _restart_hub(stack: HubStack, **settings: str) -> None:
    stack.hub.stop()
    stack.hub.write_config(EVEREST_CONFIG + _CONFIG, **settings)
    stack.hub.start()


def test_allowed_users_decide_who_signs_in(stack: HubStack) -> None:
    """alice has an Everest account but is not on the hub's allow list; bob is."""
    refused = _sign_in(stack, "alice")
    assert refused.status_code == 403, refused.text
    assert _sign_in(stack, "bob").status_code == 302


def test_a_refused_option_is_a_bad_request(stack: HubStack) -> None:
    resp = stack.api.spawn("oscar", profile="huge")
    assert resp.status_code == 400, resp.text
    assert "no profile 'huge' here" in resp.json()["message"]


def test_a_wrong_everest_url_is_named_as_such(stack: HubStack) -> None:
    wrong = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _restart_hub(stack, everest_url=wrong)
    try:
        resp = stack.api.spawn("wendy")
        assert resp.status_code == 503, resp.text
        message = resp.json()["message"]
        assert f"Everest at {wrong} did not answer" in message, message
        assert f"the relay reaches Everest at {stack.server.url}" in message, message
        assert "EverestSpawner.everest_url is likely wrong" in message, message
        assert "try again in a minute" not in message
    finally:
        _restart_hub(stack, everest_url=stack.server.url)
    wait_for(lambda: stack.api.server("wendy") is None, 30, "the failed spawn to clear")


def test_a_stopped_everest_is_reported_as_everest_not_answering(stack: HubStack) -> None:
    relay = Api(stack.relay.url, stack.everest.token)
    stack.server.stop()
    try:
        # once the relay's cached answer on the hub's token has run out, it asks Everest
        wait_for(lambda: relay("GET", "/api/sessions").status_code == 503, 30,
                 "the relay to find Everest gone")
        resp = stack.api.spawn("stan")
        assert resp.status_code == 503, resp.text
        message = resp.json()["message"]
        assert "Everest did not answer (the relay says: Everest at " in message, message
        assert "the relay refused" not in message
    finally:
        stack.server.restart()
    wait_for(lambda: stack.api.server("stan") is None, 30, "the failed spawn to clear")


def test_help_all_shows_the_true_defaults_and_marks_what_does_nothing() -> None:
    from launcher.hub.spawner import NOT_USED

    text = subprocess.run([sys.executable, "-m", "jupyterhub", "--help-all"],
                          capture_output=True, text=True, timeout=120, env=child_env(),
                          check=True).stdout

    def entry(name: str) -> str:
        start = text.index(f"--{name}=")
        return text[start:text.index("\n--", start)]

    assert "Default: 900" in entry("EverestSpawner.start_timeout")
    assert "Default: True" in entry("EverestAuthenticator.enable_auth_state")
    assert "Default: True" in entry("EverestAuthenticator.refresh_pre_spawn")
    allow_all = entry("EverestAuthenticator.allow_all")
    assert "Default: True" in allow_all and "allowed_users" in allow_all
    assert len(NOT_USED) >= 10
    for name in NOT_USED:
        assert "Not used by EverestSpawner" in entry(f"EverestSpawner.{name}"), name
    for name in ("request_otp", "otp_prompt", "auto_login_oauth2_authorize"):
        assert "Not used by EverestAuthenticator" in entry(f"EverestAuthenticator.{name}")
