"""The relay's HTTP handlers' common ground: JSON in and out, Everest-style errors, and who
the caller is. :mod:`launcher.relay.api` and :mod:`launcher.relay.proxy` build on it."""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from everest_app import strict_json
from launcher.relay import store as rs
from launcher.relay.auth import AuthFailed, AuthUnavailable

PAGE_COOKIE = "relay_token"
"""The relay page's sign-in cookie: HttpOnly, SameSite=Strict, sent only to ``/api/``."""
PAGE_COOKIE_PATH = "/api/"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiError(web.HTTPError):
    """An error answered as ``{"message": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(status, reason=None)
        self.message = message


class BaseHandler(web.RequestHandler):
    """JSON in, JSON out, Everest-style errors."""

    @property
    def relay(self):  # -> launcher.relay.service.Relay
        return self.application.settings["relay"]

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        """A browser's state-changing call must come from the relay's own origin: a page
        elsewhere (another site, or a session on its own origin) gets a 403. Callers that
        send no ``Origin`` (runners, the hub, scripts) are not browsers' cross-origin
        requests and pass."""
        origin = self.request.headers.get("Origin")
        if self.request.method in STATE_CHANGING and origin is not None and \
                origin.rstrip("/") not in self.relay.own_origins():
            raise ApiError(403, f"requests from {origin[:100]} may not change anything here: "
                                "use the relay's own page or send no Origin")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = strict_json.loads(self.request.body)
        except strict_json.JSONInputError as exc:
            raise ApiError(400, f"the request body is refused: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(strict_json.dumps(data))

    def token(self) -> tuple[str | None, bool]:
        """The caller's Everest token and whether it came from a cookie: the
        ``Authorization`` header, else the relay page's own cookie. Never Everest's
        ``access_token`` cookie: browsers send it to every port of its host, so any page a
        session serves there would act with it."""
        header = self.request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip() or None, False
        value = self.get_cookie(PAGE_COOKIE)
        return (value, True) if value else (None, False)

    async def owner(self) -> str:
        """Authenticate the caller; raises 401/403/503 ``ApiError``s."""
        token, from_cookie = self.token()
        if from_cookie and self.request.method not in ("GET", "HEAD") and \
                not self.request.headers.get("X-Requested-With"):
            raise ApiError(403, "cookie-authenticated requests need the X-Requested-With header")
        try:
            return await self.relay.auth.identify(token)
        except AuthFailed as exc:
            raise ApiError(401, str(exc)) from None
        except AuthUnavailable as exc:
            raise ApiError(503, str(exc)) from None

    def own_session(self, owner: str, session_id: str) -> rs.SessionRecord:
        record = self.relay.store.get(session_id)
        if record is None or record.owner != owner:
            raise ApiError(404, f"no session {session_id}")
        return record

    def public_base(self) -> str:
        """The relay's public address, from its configuration (never the request's Host
        header, which the caller chooses)."""
        return self.relay.public_base()
