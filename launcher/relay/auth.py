"""Who is calling the relay: the user's Everest token, checked with Everest itself.

The relay has no accounts of its own. A caller presents an Everest access token (Bearer
header, or a cookie); the relay asks Everest ``GET /api/auth/access_token`` whether it is
valid and who it belongs to, and caches the answer for a few seconds (keyed by the token's
hash, never the token), so a token revoked at Everest stops working here within those
seconds. So the relay works in front of a real Everest as well as the local server.

What Everest says about a token is not public; the owner is read from the first of
``username``, ``user``, ``login``, ``owner``, ``name`` that holds a string (or ``user`` as an
object with one of those), else the token itself (hashed) identifies the caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger(__name__)

_OWNER_KEYS = ("username", "user", "login", "owner", "name")


class AuthFailed(Exception):
    """The token is missing, invalid or expired (HTTP 401)."""


class AuthUnavailable(Exception):
    """Everest could not be asked (HTTP 503); the message says why."""


class AuthThrottled(AuthUnavailable):
    """Everest answered 429: too many tries; ``retry_after`` seconds to wait (its
    ``Retry-After``, else 1)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def owner_of(info: Any, token: str) -> str:
    """The user a token-info document names (see the module docstring)."""
    if isinstance(info, dict):
        for key in _OWNER_KEYS:
            value = info.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                nested = owner_of(value, token)
                if not nested.startswith("token:"):
                    return nested
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _message(exc: HTTPClientError) -> str | None:
    """The ``message`` of an Everest error answer, if it has one."""
    try:
        doc = json.loads(exc.response.body) if exc.response is not None else None
    except ValueError:
        return None
    message = doc.get("message") if isinstance(doc, dict) else None
    return message[:500] if isinstance(message, str) else None


def _retry_after(exc: HTTPClientError) -> float:
    """Seconds Everest's ``Retry-After`` asks for (a number; 1 when absent or a date)."""
    value = exc.response.headers.get("Retry-After", "") if exc.response is not None else ""
    try:
        return min(max(float(value), 1.0), 24 * 3600.0)
    except ValueError:
        return 1.0


class EverestAuth:
    """Token checks (and password logins for the relay's page) against one Everest."""

    def __init__(self, everest_url: str, cache_seconds: float = 5.0, timeout: float = 10.0):
        self.everest_url = everest_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._cache: dict[str, tuple[float, str]] = {}

    async def identify(self, token: str | None) -> str:
        """The owner of ``token``. Raises :class:`AuthFailed` or :class:`AuthUnavailable`."""
        if not token:
            raise AuthFailed("no Everest token: sign in, or send 'Authorization: Bearer <token>'")
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        info = await self._fetch_json("GET", "/api/auth/access_token", token=token)
        owner = owner_of(info, token)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[key] = (now + self.cache_seconds, owner)
        return owner

    def forget(self, token: str) -> None:
        self._cache.pop(hashlib.sha256(token.encode()).hexdigest(), None)

    async def login(self, username: str, password: str, lifetime: int = 86400,
                    headers: dict[str, str] | None = None) -> str:
        """Obtain an Everest token for the relay's page (``headers`` go along: the signed
        client address). Raises AuthFailed, AuthThrottled (Everest's 429) or
        AuthUnavailable."""
        body = {"username": username, "password": password,
                "label": "everest-jupyter relay", "lifetime": lifetime}
        doc = await self._fetch_json("POST", "/api/auth/access_token", body=body,
                                     extra=headers)
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthUnavailable(f"Everest at {self.everest_url} answered without a token")
        return token

    async def _fetch_json(self, method: str, path: str, *, token: str | None = None,
                          body: dict[str, Any] | None = None,
                          extra: dict[str, str] | None = None) -> Any:
        headers = {"Accept": "application/json", **(extra or {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        req = HTTPRequest(self.everest_url + path, method=method, headers=headers,
                          body=json.dumps(body) if body is not None else None,
                          connect_timeout=self.timeout, request_timeout=self.timeout)
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as exc:
            if exc.code in (400, 401, 403):
                raise AuthFailed("Everest refused the credentials (token invalid or expired; "
                                 "sign in again)") from None
            if exc.code == 429:
                raise AuthThrottled(_message(exc) or "Everest says: too many tries; wait",
                                    _retry_after(exc)) from None
            raise AuthUnavailable(f"Everest at {self.everest_url} answered {exc.code}") from None
        except OSError as exc:
            raise AuthUnavailable(f"Everest at {self.everest_url} is unreachable: {exc}") from None
        try:
            return json.loads(resp.body or b"{}")
        except ValueError:
            raise AuthUnavailable(f"Everest at {self.everest_url} answered non-JSON") from None
