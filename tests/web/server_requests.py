"""Plain-HTTP helpers of the web tests: tokens, cookie-only sessions, the server's refusals."""

from __future__ import annotations

from typing import Any

import requests

from everest_app.client import EverestClient
from tests.harness.server import ServerProcess


def login_token(server: ServerProcess, user: str = "alice") -> str:
    """A fresh token of ``user`` (its own, so a test may revoke it)."""
    return EverestClient.login(server.url, user, server.password_for(user), label="web-test")


def cookie_session(server: ServerProcess, token: str) -> requests.Session:
    """A requests session that authenticates like the browser: only the cookie."""
    session = requests.Session()
    session.cookies.set("access_token", token, domain="127.0.0.1", path="/")
    return session


def server_refusal(server: ServerProcess, method: str, path: str,
                   **kwargs: Any) -> tuple[int, str]:
    """Status and ``message`` of the server's own answer to a request it refuses."""
    resp = requests.request(method, server.url + path, timeout=10,
                            headers={"Authorization": f"Bearer {server.token}"}, **kwargs)
    assert resp.status_code >= 400, f"{method} {path} was accepted: {resp.text[:200]}"
    return resp.status_code, resp.json()["message"]
