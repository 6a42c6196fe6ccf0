"""The one client base for the project's JSON APIs (Everest's, the relay's).

One keep-alive :class:`requests.Session` per client with a bounded connection pool, connect
and read timeouts, and retries with exponential backoff (honouring ``Retry-After``) for
idempotent calls and for 429/502/503/504. A non-idempotent request (a submission) is retried
only when it provably never reached the server (connection refused) or the server said 429,
so nothing is silently done twice. Error statuses map onto :mod:`everest_app.errors`, the same
for every API, so callers (and the CLI) handle them one way: 401/403 -> :class:`AuthError`,
404 -> :class:`NotFoundError`, other 4xx -> :class:`BadRequestError`, 5xx ->
:class:`ServerError`, no answer -> :class:`EverestConnectionError`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from everest_app import __version__
from everest_app.errors import (
    AuthError,
    BadRequestError,
    EverestConnectionError,
    EverestError,
    NotFoundError,
    ServerError,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TOKEN_COOKIE = "access_token"
"""The cookie Everest (and the local server) keep a signed-in browser's token in."""
USER_AGENT = f"everest-jupyter/{__version__}"


class _Retry(Retry):
    """urllib3's Retry, but a non-idempotent request is retried on 429 only.

    A 429 means the server refused before doing anything, so resending is safe; after a
    502/503/504 or a read error the server may have acted, so a POST is not resent.
    """

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if not self._is_method_retryable(method):
            return bool(self.total) and status_code == 429
        return super().is_retry(method, status_code, has_retry_after)


def _build_session(retries: int, backoff: float, pool_size: int,
                   idempotent: frozenset[str]) -> requests.Session:
    retry = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_max=10,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=idempotent,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def server_message(response: requests.Response) -> str:
    """The server's own explanation of an error response, as short text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason or ""
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "reason"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:500]


class JsonApiClient:
    """A connection to one JSON API as one user (a bearer token).

    Subclasses name their server (:attr:`service`, for messages), say how to fix an
    unreachable one (:attr:`unreachable_hint`) and may widen :attr:`idempotent_methods`.
    """

    service = "Everest"
    unreachable_hint = ("Is the server running, and is the URL right (--everest, EVEREST_URL, "
                        "profile)?")
    idempotent_methods = IDEMPOTENT_METHODS

    def __init__(self, url: str, token: str | None, *,
                 timeout: float | tuple[float, float] = (5, 60), retries: int = 4,
                 backoff: float = 0.2, pool_size: int = 32):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = _build_session(retries, backoff, pool_size, self.idempotent_methods)
        self.token = token

    @property
    def token(self) -> str | None:
        """The token sent as ``Authorization: Bearer``; falls back to the cookie jar's."""
        return self._token or self.http.cookies.get(TOKEN_COOKIE)

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if value:
            self.http.headers["Authorization"] = f"Bearer {value}"
        else:
            self.http.headers.pop("Authorization", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __enter__(self) -> JsonApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self.http.close()

    def _absolute(self, path_or_uri: str) -> str:
        if path_or_uri.startswith(("http://", "https://")):
            return path_or_uri
        return urljoin(self.url + "/", path_or_uri.lstrip("/"))

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request to ``path`` (server-relative or absolute) and return the response.

        Raises the :class:`EverestError` subclass that matches an error status, or
        :class:`EverestConnectionError` when the server cannot be reached in time.
        """
        url = self._absolute(path)
        kwargs.setdefault("timeout", self.timeout)
        if not url.startswith(self.url + "/"):
            # never hand our token to another host
            kwargs.setdefault("headers", {})["Authorization"] = None
        try:
            response = self.http.request(method, url, **kwargs)
        except requests.exceptions.RetryError as exc:
            raise ServerError(f"{self.service} at {self.url} kept failing on {method} {path}: "
                              f"{exc}; try again later.", url=url) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise EverestConnectionError(
                f"Cannot reach {self.service} at {self.url} ({type(exc).__name__}). "
                f"{self.unreachable_hint}", url=url) from exc
        if response.status_code >= 400:
            raise self._error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{self.service} answered {method} {path} with non-JSON: "
                              f"{response.text[:200]!r}", status=response.status_code) from exc

    def _error_for(self, response: requests.Response) -> EverestError:
        """Map an error response to the exception a caller can act on."""
        status = response.status_code
        said = server_message(response)
        where = f"{response.request.method} {urlsplit(response.url).path}"
        kw = {"status": status, "url": response.url}
        if status == 401:
            return AuthError(
                f"{self.service} at {self.url} refused the token ({said or 'unauthorized'}). "
                "It is missing, expired or revoked: run `everest-jupyter login`.", **kw)
        if status == 403:
            return AuthError(f"Not allowed: {where} ({said or 'forbidden'}).", **kw)
        if status == 404:
            return NotFoundError(f"Not found: {where}" + (f" ({said})" if said else "") + ".",
                                 **kw)
        if 400 <= status < 500:
            return BadRequestError(f"{self.service} refused {where}: "
                                   f"{said or response.reason}", **kw)
        return ServerError(
            f"{self.service} at {self.url} failed on {where} with {status} "
            f"({said or response.reason}) after retries; try again later.", **kw)
