"""A client of the relay's HTTP API (see :mod:`launcher.relay.api`) for the launcher and CLI.

Transport, retries and the mapping of errors onto :mod:`everest_app.errors` are the Everest
client's (:class:`everest_app.json_api.JsonApiClient`), so the CLI reports both alike.
"""

from __future__ import annotations

from typing import Any

from everest_app.json_api import IDEMPOTENT_METHODS, JsonApiClient
from launcher.relay.state import SessionState


class RelayClient(JsonApiClient):
    """Talks to one relay with one Everest token, over a keep-alive session."""

    service = "the relay"
    unreachable_hint = "Is it running, and is its URL right (--relay, the profile's relay_url)?"
    idempotent_methods = IDEMPOTENT_METHODS | {"PATCH"}  # PATCH sets fields: safe to resend

    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        super().__init__(url, token, timeout=timeout, retries=3)

    def _call(self, method: str, path: str, *, timeout: float | None = None,
              **kwargs: Any) -> Any:
        return self._json(method, path, timeout=timeout or self.timeout, **kwargs)

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
