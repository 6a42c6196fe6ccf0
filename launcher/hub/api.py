"""An asynchronous JSON client for the hub's calls to Everest and to the relay.

JupyterHub runs every spawner on one event loop, so nothing here blocks: requests go through
tornado's ``AsyncHTTPClient`` (what the hub itself uses). Reads and deletes are retried
with exponential backoff on connection failures and 502/503/504; a submission (POST) is
never resent after it may have reached the server, so no job is created twice.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

_RETRY_STATUSES = (502, 503, 504, 599)


class ApiError(Exception):
    """A call failed: ``status`` is the HTTP status (0 when there was no answer) and
    ``message`` the server's own explanation when it gave one."""

    def __init__(self, status: int, message: str, url: str = "", explained: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.url = url
        self.explained = explained  # the message is the server's own JSON {"message"}
        self.retry_after = retry_after  # seconds, from the answer's Retry-After

    @property
    def unreachable(self) -> bool:
        """No usable answer: the server is down, overloaded or the network failed."""
        return self.status in (0, *_RETRY_STATUSES)


def path_part(value: str) -> str:
    """``value`` as one safe URL path segment."""
    return quote(value, safe="")


class JsonApi:
    """Calls to one JSON API with one bearer token. ``timeout`` bounds each attempt."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 10.0,
                 retries: int = 2, backoff: float = 0.3):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    async def call(self, method: str, path: str, body: Any = None, *,
                   params: dict[str, Any] | None = None, timeout: float | None = None,
                   retries: int | None = None, headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer (``None`` for an empty one); ``headers`` are sent along.
        Raises :class:`ApiError`."""
        url = self.base_url + path
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json", **(headers or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        limit = timeout or self.timeout
        attempts = 1 + (self.retries if retries is None else retries)
        if method == "POST":
            attempts = 1  # may have reached the server: never resent
        delay = self.backoff
        for attempt in range(attempts):
            req = HTTPRequest(url, method=method, headers=headers,
                              body=json.dumps(body) if body is not None else
                              (b"" if method in ("POST", "PATCH") else None),
                              connect_timeout=min(limit, 10.0), request_timeout=limit)
            try:
                resp = await AsyncHTTPClient().fetch(req)
            except HTTPClientError as exc:
                message = _message(exc)
                error = ApiError(exc.code, message or f"HTTP {exc.code} {exc.message or ''}"
                                 .strip(), url, explained=bool(message),
                                 retry_after=_retry_after(exc))
            except OSError as exc:
                error = ApiError(0, f"no answer from {self.base_url}: {exc}", url)
            else:
                if not resp.body:
                    return None
                try:
                    return json.loads(resp.body)
                except ValueError:
                    raise ApiError(resp.code, f"{url} answered non-JSON", url) from None
            if not error.unreachable or attempt == attempts - 1:
                raise error
            await asyncio.sleep(delay * (1 + random.random()))
            delay *= 2
        raise AssertionError("unreachable")


def _message(exc: HTTPClientError) -> str:
    """The server's own ``{"message"}``, or "" when it gave none."""
    body = exc.response.body if exc.response is not None else b""
    try:
        doc = json.loads(body or b"")
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    return ""


def _retry_after(exc: HTTPClientError) -> float | None:
    """Seconds the answer's ``Retry-After`` asks for (a number; None when absent)."""
    value = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
