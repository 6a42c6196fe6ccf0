"""EverestAuthenticator: users sign in to the hub with their Everest user name and password.

The password goes to Everest once, for a labelled token with a lifetime
(``POST /api/auth/access_token``); the hub keeps only that token, in the user's encrypted
``auth_state`` (set ``JUPYTERHUB_CRYPT_KEY``), and ``EverestSpawner`` submits the user's
jobs with it — so every job belongs to its user, and Everest's own rules decide which
resources it may use. A token close to its end makes the hub ask the user to sign in again
(before a spawn too), which gets a fresh one and revokes the previous one. No password is
stored.

Sign-ins are throttled here per browser address first (``login_attempts``, as the local
server and the relay's page do: :class:`everest_app.throttle.SignInThrottle`), answering 429
with ``Retry-After`` before the password goes to Everest, so one address's guesses make only
that address wait. With the local server's client-address key (``client_address_key_file``)
each sign-in also names the browser's address to the server, signed
(:mod:`everest_app.client_address`), so the server's per-address throttle counts browsers,
not the hub. Everest's own 429 reaches the user as a 429 with its ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Bool, Float, Integer, TraitError, Unicode, default, validate

from everest_app import client_address
from everest_app.throttle import SignInThrottle
from launcher.hub.api import ApiError, JsonApi
from launcher.relay.auth import owner_of


class EverestAuthenticator(Authenticator):
    """Sign in with an Everest account (see the module docstring)."""

    everest_url = Unicode(
        "", config=True,
        help="""The Everest whose accounts sign in here (the same as
        ``EverestSpawner.everest_url``).""")

    token_lifetime = Integer(
        7 * 24 * 3600, config=True,
        help="""Seconds the Everest token obtained at sign-in is valid (Everest's default is
        one week).""")

    token_label = Unicode(
        "jupyterhub", config=True,
        help="""The label of the tokens this hub obtains, as the user sees them in
        Everest's token list.""")

    refresh_margin = Integer(
        3600, config=True,
        help="""A token with less than this many seconds left counts as expired: the user
        signs in again (the hub checks before every spawn and every ``auth_refresh_age``).""")

    http_request_timeout = Integer(10, config=True,
                                   help="Seconds a request to Everest may take.")

    enable_auth_state = Bool(
        True, config=True,
        help="""Keep each user's Everest token in JupyterHub's encrypted auth_state (needs
        JUPYTERHUB_CRYPT_KEY): EverestSpawner submits the user's jobs with it.""")

    refresh_pre_spawn = Bool(
        True, config=True,
        help="""Check the user's Everest token before every spawn; one close to its end
        (``refresh_margin``) makes the user sign in again.""")

    allow_all = Bool(
        True, config=True,
        help="""Let every Everest account that signs in use the hub: True unless
        ``allowed_users`` is set, which then decides (admins always may).
        Everest itself decides who has an account.""",
    ).tag(allow_config=True)

    login_attempts = Integer(
        5, config=True,
        help="""Failed sign-ins for one user from one browser address before each further
        try from there must wait (1 s, doubling up to ``login_backoff_max``; 4x this from
        one address for any users). The hub answers 429 with Retry-After itself, before the
        password reaches Everest; it never locks an account. The address is the one the
        hub's proxy reports (JupyterHub trusts X-Forwarded-For, so keep the hub's own port
        reachable only through its proxy).""")

    login_backoff_max = Float(
        900.0, config=True,
        help="The longest wait between sign-in tries after failures, in seconds.")

    client_address_key_file = Unicode(
        "", config=True,
        help="""The local server's client-address key (its ``<data dir>/client-address.key``,
        copied here 0600, or read in place on the same machine): with it, each sign-in tells
        the server the browser's address, signed, so the server's per-address throttle counts
        each browser and not the hub. A real Everest has no such key: leave it empty, and the
        hub's own throttle (``login_attempts``) keeps one address's guesses from locking out
        others.""")

    request_otp = Bool(
        False, config=True,
        help="Not used by EverestAuthenticator: Everest signs in with a password only.")

    otp_prompt = Unicode(
        "OTP:", config=True,
        help="Not used by EverestAuthenticator: Everest signs in with a password only.")

    auto_login_oauth2_authorize = Bool(
        False, config=True,
        help="Not used by EverestAuthenticator: it signs in with a form, not OAuth.")

    @validate("client_address_key_file")
    def _key_readable(self, proposal: dict) -> str:
        if proposal["value"]:
            try:
                client_address.read_key(proposal["value"])
            except ValueError as exc:
                raise TraitError(str(exc)) from None
        return proposal["value"]

    @validate("login_attempts", "login_backoff_max")
    def _positive(self, proposal: dict) -> float:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name} must be at least 1")
        return proposal["value"]

    _throttle: SignInThrottle | None = None

    def _sign_ins(self) -> SignInThrottle:
        if self._throttle is None:
            self._throttle = SignInThrottle(self.login_attempts, self.login_backoff_max,
                                            lock_addresses=None)
        return self._throttle

    def _address_headers(self, username: str, address: str) -> dict[str, str]:
        if not self.client_address_key_file:
            return {}
        key = client_address.read_key(self.client_address_key_file)
        return {client_address.HEADER: client_address.sign(key, address, username)}

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # an explicit allow list narrows who may sign in (JupyterHub's DummyAuthenticator
        # rule); otherwise any Everest account may
        return not (self.allowed_users or getattr(self, "allowed_groups", None))

    async def authenticate(self, handler: web.RequestHandler, data: dict[str, str]
                           ) -> dict[str, Any] | None:
        """Trade the user name and password for an Everest token; None when Everest says
        no. Raises a 503 when Everest cannot be asked."""
        username, password = data.get("username", ""), data.get("password", "")
        if not username or not password:
            return None
        address = handler.request.remote_ip or ""
        wait = self._sign_ins().wait(username, address)
        if wait > 0:
            raise _too_many(f"Too many failed sign-ins from your address; try again in "
                            f"{math.ceil(wait)} s.", wait)
        everest = JsonApi(self.everest_url, None, timeout=self.http_request_timeout, retries=0)
        try:
            answer = await everest.call("POST", "/api/auth/access_token", {
                "username": username, "password": password, "label": self.token_label,
                "lifetime": self.token_lifetime},
                headers=self._address_headers(username, address))
        except ApiError as exc:
            if exc.status in (400, 401, 403):
                self.log.warning("Everest refused the sign-in of %r from %s", username,
                                 address)
                self._sign_ins().failed(username, address)
                return None
            if exc.status == 429:
                raise _too_many(f"Everest: {exc.message}", exc.retry_after or 1.0) from None
            raise web.HTTPError(503, f"Everest at {self.everest_url} cannot be asked "
                                     f"right now ({exc.message}); try again soon.") from None
        token = (answer or {}).get("access_token")
        if not isinstance(token, str) or not token:
            raise web.HTTPError(503, "Everest answered the sign-in without a token")
        name = username
        try:
            info = await JsonApi(self.everest_url, token,
                                 timeout=self.http_request_timeout).call(
                "GET", "/api/auth/access_token")
            named = owner_of(info, token)
            if not named.startswith("token:"):
                name = named
        except ApiError as exc:
            self.log.info("Everest token info for %r unavailable: %s", username, exc)
        self._sign_ins().succeeded(username, address)
        await self._revoke_previous(handler, name, token)
        return {"name": name, "auth_state": {
            "everest_token": token, "everest_url": self.everest_url,
            "everest_token_expires": time.time() + self.token_lifetime}}

    async def _revoke_previous(self, handler: web.RequestHandler, name: str,
                               token: str) -> None:
        """Revoke the token of the user's previous sign-in (the new one replaces it in
        ``auth_state``), so a hub leaves one live token per user on Everest. Best effort."""
        try:
            user = handler.find_user(self.normalize_username(name))
            state = await user.get_auth_state() if user is not None else None
        except Exception as exc:  # noqa: BLE001 - no previous state is the normal case
            self.log.debug("no previous auth state for %r: %s", name, exc)
            return
        old = (state or {}).get("everest_token")
        if not old or old == token:
            return
        try:
            await JsonApi(self.everest_url, old, timeout=self.http_request_timeout,
                          retries=0).call("DELETE", "/api/auth/access_token")
        except ApiError as exc:
            if exc.status not in (401, 403):  # already expired or revoked: nothing to do
                self.log.info("could not revoke %r's previous Everest token: %s", name,
                              exc.message)

    async def refresh_user(self, user: Any, handler: web.RequestHandler | None = None
                           ) -> bool | dict[str, Any]:
        """True while the user's token has more than ``refresh_margin`` left; False (sign
        in again) otherwise. A user without a token (made by an admin through the API, whose
        jobs use the hub's service token) has nothing to refresh."""
        state = await user.get_auth_state()
        if not state or not state.get("everest_token"):
            return True
        return float(state.get("everest_token_expires", 0)) - time.time() > \
            self.refresh_margin


def _too_many(message: str, wait: float) -> web.HTTPError:
    """A 429 for the login form, with ``Retry-After`` (JupyterHub's error page sets an
    HTTPError's ``headers``)."""
    error = web.HTTPError(429, message)
    error.headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    return error
