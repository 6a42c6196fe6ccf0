"""The relay's HTTP API and page (tornado).

Users (an Everest token as ``Authorization: Bearer``, or the ``relay_token`` cookie the page
sets, scoped to ``/api/``; never Everest's own ``access_token`` cookie):

- ``POST /api/sessions`` ``{"mode"?, "label"?, "default_url"?, "ticket_ttl"?, "workspace"?,
  "snapshot"?, "read_only"?}`` -> 201 the
  session with its one-time ``ticket`` and the ``relay_url`` the job's runner must use
  (``ticket_ttl`` may shorten, never lengthen, the relay's ticket lifetime). Mode ``hub``
  (a JupyterHub's single-user server) also takes ``base_url`` (the hub's prefix for the
  server), ``hub_env`` (the ``JUPYTERHUB_*`` environment, handed to the runner with its
  grant and never shown again) and ``hub_forward`` (may the runner reach the relay's
  configured hub API through its SSH connection); its ``url`` is the address the hub's
  proxy forwards to (the relay's root: it serves the server at its prefix). A prefix
  ``/user/<name>/`` may be claimed by Everest user ``<name>`` or by a
  ``--hub-service-account``, by one live session at a time (403, 409). ``workspace`` names
  the caller's workspace the session opens (409 naming the live session that writes it,
  unless ``read_only``; see :mod:`launcher.relay.workspaces`);
- ``GET /api/sessions`` -> the caller's live sessions (``?all=1``: ended ones too);
- ``GET /api/sessions/<id>`` (``?state=S&wait=SECONDS``: answers when the state is no longer
  S, at most SECONDS later — the launcher's progress without polling);
- ``PATCH /api/sessions/<id>`` ``{"job_id"?, "label"?}``; ``DELETE /api/sessions/<id>`` ends it.

Session runners (the ticket is the credential):

- ``POST /api/tickets/redeem`` ``{"ticket", "public_key", "notebook_token", "runner"?}`` -> 200
  the grant (see :meth:`launcher.relay.service.Relay.grant`); 403 for an unknown, used or expired
  ticket.

- ``POST /api/sessions/<id>/ended`` ``{"end_token", "reason"?, "stop"?, "workspace"?}``: the
  runner stopped (the ``end_token`` came with its grant; ``workspace``: how its final save
  went, ``{"saved", "files", "bytes", "error"?}``) -> 200; 403 for a wrong token. It may come
  after the session was ended (a stop at the relay) while the final save runs.

- ``POST /api/sessions/<id>/deadlines`` ``{"end_token", "time_limit_left", "idle_left"}``
  (seconds, or null for none): when the session will end, reported again when the idle
  deadline moves -> 200 the time left; 403 for a wrong token (:mod:`launcher.relay.deadlines`).

- ``POST /api/sessions/<id>/answering`` ``{"end_token"}``: the runner's notebook answers on
  the runner's side, so the relay probes it through the tunnel now rather than at its next
  timed look (the probe alone makes the session ``ready``) -> 200 ``{"session_id",
  "state"}``; 403 for a wrong token.

- ``GET /api/tunnel`` as a WebSocket: the relay's SSH server, for runners that cannot reach
  its SSH port (:mod:`launcher.relay.websocket`); the enrolled key is the credential.

Sessions: ``/session/<id>/...`` is the session's JupyterLab (see :mod:`launcher.relay.proxy`).

Anyone: ``GET /api/relay`` (version, SSH port), ``GET /`` (the page), ``POST /api/login``
``{"username","password"}`` (an Everest login for the page), ``POST /api/logout``.

Every error is ``{"message": ...}`` with its 4xx/5xx status. Cookie-authenticated requests
that change something must carry ``X-Requested-With`` (the page sends it), which a cross-site
form cannot; a state-changing request whose ``Origin`` is not the relay's own is refused (403).
"""

from __future__ import annotations

import json
import logging
import math
import re
from importlib import resources
from typing import Any
from urllib.parse import unquote

import asyncssh

from everest_app import __version__
from launcher.relay import deadlines
from launcher.relay import store as rs
from launcher.relay.auth import AuthFailed, AuthThrottled, AuthUnavailable
from launcher.relay.handlers import PAGE_COOKIE, PAGE_COOKIE_PATH, ApiError, BaseHandler
from launcher.relay.options import check_base_prefix, check_default_url
from launcher.relay.state import SessionState, StopReason
from launcher.relay.workspaces import WorkspaceError

log = logging.getLogger(__name__)
_STATE_NAMES = frozenset(s.value for s in SessionState)

_SID = r"([0-9a-f]{24})"
_LABEL_MAX = 200


def _text(body: dict[str, Any], name: str, default: str, limit: int = _LABEL_MAX) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, f"'{name}' must be a string of at most {limit} characters")
    return value


_HUB_ENV_NAME = re.compile(r"^(JUPYTERHUB_[A-Z_]{1,60}|JPY_API_TOKEN)$")
_HUB_ENV_MAX = 32 * 1024
_HUB_USER = re.compile(r"/user/([^/]+)/(?:[^/]+/)?$")


def _hub_fields(body: dict[str, Any], mode: str, forward_possible: bool) -> dict[str, Any]:
    """The hub-mode part of a new session: ``base_url`` (the hub's prefix for the server),
    ``hub_env`` (``JUPYTERHUB_*`` variables only) and ``hub_forward``. Lab mode takes none."""
    given = [name for name in ("base_url", "hub_env", "hub_forward") if name in body]
    if mode != rs.HUB_MODE:
        if given:
            raise ApiError(400, f"{', '.join(given)}: only for mode 'hub'")
        return {}
    try:
        base_url = check_base_prefix(body.get("base_url", ""))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    env = body.get("hub_env", {})
    if not isinstance(env, dict) or len(json.dumps(env)) > _HUB_ENV_MAX or not all(
            isinstance(k, str) and _HUB_ENV_NAME.match(k) and isinstance(v, str)
            for k, v in env.items()):
        raise ApiError(400, "'hub_env' must be an object of JUPYTERHUB_* variables to strings")
    forward = body.get("hub_forward", False)
    if not isinstance(forward, bool):
        raise ApiError(400, "'hub_forward' must be true or false")
    if forward and not forward_possible:
        raise ApiError(400, "this relay has no hub API address configured (--hub-api), so "
                            "it cannot forward to the hub: set hub_forward false and give the "
                            "runner a JUPYTERHUB_API_URL it can reach")
    return {"base_url": base_url, "hub_env": env, "hub_forward": forward}


def _workspace_fields(body: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """A new session's ``workspace`` (a name, or null for none), ``snapshot`` (an id of
    that workspace's history to restore) and ``read_only``."""
    name, snapshot = body.get("workspace"), body.get("snapshot")
    read_only = body.get("read_only", False)
    if not isinstance(name, (str, type(None))) or not isinstance(snapshot, (str, type(None))):
        raise ApiError(400, "'workspace' and 'snapshot' must be strings (or null)")
    if not isinstance(read_only, bool):
        raise ApiError(400, "'read_only' must be true or false")
    if name is None and (snapshot is not None or read_only):
        raise ApiError(400, "'snapshot' and 'read_only' need a 'workspace'")
    return name, snapshot, read_only


class SessionsHandler(BaseHandler):
    async def get(self) -> None:
        owner = await self.owner()
        live_only = self.get_query_argument("all", "0") in ("0", "", "false")
        records = self.relay.store.list(owner=owner, live_only=live_only)
        self.send([self.relay.view(r) for r in records])

    async def post(self) -> None:
        owner = await self.owner()
        body = self.json_body()
        mode = _text(body, "mode", rs.LAB_MODE)
        if mode not in rs.MODES:
            raise ApiError(400, f"mode {mode!r} is not supported by this relay "
                                f"(one of {', '.join(rs.MODES)})")
        try:
            default_url = check_default_url(body.get("default_url", "/lab"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        hub = _hub_fields(body, mode, self.relay.config.hub_api_address() is not None)
        if hub:
            self._check_hub_prefix(owner, hub["base_url"])
        ttl = body.get("ticket_ttl", self.relay.config.ticket_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ApiError(400, "'ticket_ttl' must be a positive number of seconds")
        workspace, snapshot, read_only = _workspace_fields(body)
        try:
            record, ticket = await self.relay.create_session(
                owner, mode=mode, label=_text(body, "label", ""), default_url=default_url,
                ticket_ttl=min(float(ttl), self.relay.config.ticket_ttl), workspace=workspace,
                snapshot=snapshot, read_only=read_only, **hub)
        except WorkspaceError as exc:
            raise ApiError(exc.status, exc.message) from None
        view = self.relay.view(record)
        view.update(ticket=ticket, relay_url=self.public_base())
        self.send(view, 201)


    def _check_hub_prefix(self, owner: str, base_url: str) -> None:
        """A hub prefix is served by one live session, claimed by its own user (the hub's
        user name is the Everest one with EverestAuthenticator) or by an account the relay
        trusts to serve any (``--hub-service-account``, a hub's service token)."""
        match = _HUB_USER.search(base_url)
        user = unquote(match.group(1)) if match else None
        if owner not in self.relay.config.hub_service_accounts and user != owner:
            raise ApiError(403, f"{owner} may not serve {base_url}: a hub prefix "
                                "/user/<name>/ belongs to Everest user <name>, or to an "
                                "account the relay serves hubs for (--hub-service-account)")
        taken = self.relay.store.hub_session_at(base_url)
        if taken is not None and taken.base_url == base_url:
            raise ApiError(409, f"{base_url} is already served by live session {taken.id} "
                                f"({taken.label}); end it first")


class SessionHandler(BaseHandler):
    async def get(self, session_id: str) -> None:
        owner = await self.owner()
        record = self.own_session(owner, session_id)
        state = self.get_query_argument("state", None)
        if state is not None:
            try:
                wait = min(max(float(self.get_query_argument("wait", "25")), 0.0), 60.0)
            except ValueError:
                raise ApiError(400, "'wait' must be a number of seconds") from None
            if state in _STATE_NAMES:  # any other state differs from the session's already
                await self.relay.wait_change(session_id, SessionState(state), wait)
                record = self.relay.store.get(session_id)
        self.send(self.relay.view(record))

    async def patch(self, session_id: str) -> None:
        owner = await self.owner()
        self.own_session(owner, session_id)
        body = self.json_body()
        fields = {}
        if "job_id" in body:
            job_id = body["job_id"]
            if not isinstance(job_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", job_id):
                raise ApiError(400, "'job_id' must be an Everest job id")
            fields["job_id"] = job_id
        if "label" in body:
            fields["label"] = _text(body, "label", "")
        if not fields:
            raise ApiError(400, "nothing to change: give 'job_id' or 'label'")
        self.relay.store.update(session_id, **fields)
        self.send(self.relay.view(self.relay.store.get(session_id)))

    async def delete(self, session_id: str) -> None:
        owner = await self.owner()
        self.own_session(owner, session_id)
        self.relay.end_session(session_id)
        self.send(self.relay.view(self.relay.store.get(session_id)))


class RedeemHandler(BaseHandler):
    def post(self) -> None:
        body = self.json_body()
        ticket = body.get("ticket")
        public_key = body.get("public_key")
        token = body.get("notebook_token")
        runner = body.get("runner") or {}
        if not isinstance(ticket, str) or not ticket:
            raise ApiError(400, "'ticket' is missing")
        if not rs.is_ticket(ticket):
            raise ApiError(403, "this is not a ticket of this relay (40 hex digits, nothing "
                                "around them); ask the relay for a new session")
        if not isinstance(token, str) or not 16 <= len(token) <= 200 or \
                not re.fullmatch(r"[A-Za-z0-9_.~-]+", token):
            raise ApiError(400, "'notebook_token' must be 16-200 URL-safe characters")
        if not isinstance(runner, dict) or len(json.dumps(runner)) > 4000:
            raise ApiError(400, "'runner' must be a small JSON object")
        try:
            key = asyncssh.import_public_key(str(public_key))
        except (asyncssh.KeyImportError, ValueError, TypeError):
            raise ApiError(400, "'public_key' is not an OpenSSH public key") from None
        if isinstance(key, asyncssh.SSHCertificate) or key.algorithm not in (
                b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp384",
                b"ecdsa-sha2-nistp521", b"ssh-rsa"):
            raise ApiError(400, "'public_key' must be an Ed25519, ECDSA or RSA key")
        key_text = key.export_public_key("openssh").decode().split()
        record = self.relay.redeem(ticket, " ".join(key_text[:2]), token, runner)
        if record is None:
            log.warning("redeem refused from %s", self.request.remote_ip)
            raise ApiError(403, "this ticket is unknown, expired or already used; "
                                "ask the relay for a new session")
        self.send(self.relay.grant(record))


class RunnerEndedHandler(BaseHandler):
    def post(self, session_id: str) -> None:
        body = self.json_body()
        token, reason = body.get("end_token"), body.get("reason", "")
        stop = body.get("stop")
        workspace = body.get("workspace")
        if not isinstance(token, str) or not isinstance(reason, str) or \
                not isinstance(stop, (str, type(None))):
            raise ApiError(400, "give 'end_token' (and optionally 'stop' and 'reason') as "
                                "strings")
        if workspace is not None and (not isinstance(workspace, dict)
                                      or len(json.dumps(workspace)) > 4000):
            raise ApiError(400, "'workspace' must be a small JSON object (the final save)")
        if not self.relay.runner_ended(session_id, token, reason, StopReason.parse(stop),
                                       workspace):
            raise ApiError(403, "wrong end token for this session")
        record = self.relay.store.get(session_id)
        if record is None:
            raise ApiError(404, f"no session {session_id}")
        self.send({"session_id": session_id, "state": record.state.value})


class RunnerDeadlinesHandler(BaseHandler):
    def post(self, session_id: str) -> None:
        body = self.json_body()
        token = body.get("end_token")
        if not isinstance(token, str):
            raise ApiError(400, "give 'end_token' as a string")
        try:
            limit = deadlines.check_seconds(body.get("time_limit_left"), "time_limit_left")
            idle = deadlines.check_seconds(body.get("idle_left"), "idle_left")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if not self.relay.runner_deadlines(session_id, token, limit, idle):
            raise ApiError(403, "wrong end token for this session")
        record = self.relay.store.get(session_id)
        if record is None:
            raise ApiError(404, f"no session {session_id}")
        self.send({"session_id": session_id, **deadlines.time_left(record.runner)})


class RunnerAnsweringHandler(BaseHandler):
    def post(self, session_id: str) -> None:
        token = self.json_body().get("end_token")
        if not isinstance(token, str):
            raise ApiError(400, "give 'end_token' as a string")
        if not self.relay.runner_answering(session_id, token):
            raise ApiError(403, "wrong end token for this session")
        record = self.relay.store.get(session_id)
        if record is None:
            raise ApiError(404, f"no session {session_id}")
        self.send({"session_id": session_id, "state": record.state.value})


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        from launcher.relay.openapi import description

        self.send(description())


class InfoHandler(BaseHandler):
    def get(self) -> None:
        self.send({"service": "everest-jupyter relay", "version": __version__,
                   "ssh_port": self.relay.ssh_port, "everest_url": self.relay.config.everest_url})


class LoginHandler(BaseHandler):
    """``POST /api/login``: throttled per client address here first, then Everest's own
    answer, its 429 passed on as a 429 (see :mod:`launcher.relay.sign_in`)."""

    async def post(self) -> None:
        body = self.json_body()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not username or not isinstance(password, str):
            raise ApiError(400, "give 'username' and 'password'")
        sign_in = self.relay.sign_in
        address = sign_in.client_address(self.request)
        wait = sign_in.wait(username, address)
        if wait > 0:
            return self._too_many(f"too many failed sign-ins from your address; try again in "
                                  f"{math.ceil(wait)} s", wait)
        try:
            token = await self.relay.auth.login(username, password,
                                                headers=sign_in.headers(username, address))
        except AuthFailed:
            sign_in.failed(username, address)
            raise ApiError(401, "Everest refused this user name and password") from None
        except AuthThrottled as exc:
            return self._too_many(f"Everest: {exc}", exc.retry_after)
        except AuthUnavailable as exc:
            raise ApiError(503, str(exc)) from None
        sign_in.succeeded(username, address)
        self.set_cookie(PAGE_COOKIE, token, path=PAGE_COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=self.request.protocol == "https",
                        expires_days=1)
        self.send({"user": await self.relay.auth.identify(token)})


    def _too_many(self, message: str, wait: float) -> None:
        self.set_header("Retry-After", str(max(1, math.ceil(wait))))
        self.send({"message": message}, 429)


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.clear_cookie(PAGE_COOKIE, path=PAGE_COOKIE_PATH)
        self.clear_cookie(PAGE_COOKIE)  # set at "/" by earlier versions
        self.send({})


class PageHandler(BaseHandler):
    def get(self) -> None:
        page = resources.files("launcher.relay").joinpath("page.html").read_text("utf-8")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; script-src 'unsafe-inline' 'self'; "
                        "style-src 'unsafe-inline' 'self'; frame-ancestors 'none'")
        self.finish(page)


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise ApiError(404, f"no such relay endpoint: {self.request.path}")
