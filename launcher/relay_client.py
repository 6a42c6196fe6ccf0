"""A client of the relay's HTTP API (see :mod:`launcher.relay_api`) for the launcher and CLI.

Errors map onto the Everest client's hierarchy, so the CLI reports them the same way:
401/403 -> :class:`AuthError`, 404 -> :class:`NotFoundError`, other 4xx ->
:class:`BadRequestError`, 5xx -> :class:`ServerError`, no answer ->
:class:`EverestConnectionError`.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from everest_app.errors import (
    AuthError,
    BadRequestError,
    EverestConnectionError,
    NotFoundError,
    ServerError,
)
from launcher.session_state import SessionState


class RelayClient:
    """Talks to one relay with one Everest token, over a keep-alive session."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        retry = Retry(total=3, backoff_factor=0.2, status_forcelist=(502, 503, 504),
                      allowed_methods=frozenset({"GET", "DELETE", "PATCH"}),
                      raise_on_status=False)
        self.http.mount("http://", HTTPAdapter(max_retries=retry))
        self.http.mount("https://", HTTPAdapter(max_retries=retry))

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, *, timeout: float | None = None,
              **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, self.url + path,
                                        timeout=timeout or self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise EverestConnectionError(
                f"the relay at {self.url} did not answer ({exc.__class__.__name__}); is it "
                "running?", url=self.url) from None
        if resp.ok:
            return resp.json()
        try:
            message = resp.json().get("message") or resp.reason
        except ValueError:
            message = resp.reason
        message = f"relay: {message}"
        if resp.status_code in (401, 403):
            raise AuthError(message, status=resp.status_code, url=self.url)
        if resp.status_code == 404:
            raise NotFoundError(message, status=404, url=self.url)
        if resp.status_code < 500:
            raise BadRequestError(message, status=resp.status_code, url=self.url)
        raise ServerError(message, status=resp.status_code, url=self.url)

    def create_session(self, *, mode: str = "lab", label: str = "",
                       default_url: str = "/lab") -> dict[str, Any]:
        """A new session with its one-time ``ticket`` and the ``relay_url`` for the job."""
        return self._call("POST", "/api/sessions",
                          json={"mode": mode, "label": label, "default_url": default_url})

    def session(self, session_id: str, *, unless_state: SessionState | str | None = None,
                wait: float = 0.0) -> dict[str, Any]:
        """The session; with ``unless_state``, wait up to ``wait`` s for it to leave it."""
        params = {}
        if unless_state is not None:
            params = {"state": str(unless_state), "wait": f"{wait:g}"}
        return self._call("GET", f"/api/sessions/{session_id}", params=params,
                          timeout=self.timeout + wait)

    def sessions(self, *, include_ended: bool = False) -> list[dict[str, Any]]:
        return self._call("GET", "/api/sessions", params={"all": "1"} if include_ended else {})

    def set_job(self, session_id: str, job_id: str) -> dict[str, Any]:
        return self._call("PATCH", f"/api/sessions/{session_id}", json={"job_id": job_id})

    def end(self, session_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/sessions/{session_id}")
