"""Bad input never gets a 500: NaN/Infinity, deep nesting and lone surrogates are refused
with a 400 naming the problem, from anyone (no token needed to try), and what the server
answers is always JSON a browser can parse."""

from __future__ import annotations

import json

import pytest
import requests


def _strict(text: str):
    """Parse as a browser's JSON.parse would: NaN/Infinity are errors."""
    def refuse(name: str):
        raise ValueError(f"{name} in the answer")

    return json.loads(text, parse_constant=refuse)


def _post(server, path: str, body: bytes, token: str | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(server.url + path, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("value", "named"), [
    (b"NaN", "NaN"), (b"Infinity", "Infinity"), (b"-Infinity", "-Infinity"),
    (b"1e309", "too large")])
def test_non_finite_numbers_are_refused_and_never_stored(local_server, value, named):
    body = b'{"name": "nan-probe", "inputs": {"duration": 0, "undeclared": ' + value + b"}}"
    resp = _post(local_server, "/api/apps/sleep", body, local_server.token)
    assert resp.status_code == 400 and named in resp.json()["message"]
    jobs = requests.get(local_server.url + "/api/jobs", timeout=30,
                        headers={"Authorization": f"Bearer {local_server.token}"})
    assert "nan-probe" not in [j["name"] for j in _strict(jobs.text)]


def test_deep_nesting_is_400_for_anyone(local_server):
    deep = b"[" * 5000 + b"]" * 5000
    for path, token in (("/api/auth/access_token", None), ("/api/apps/sleep",
                                                            local_server.token)):
        resp = _post(local_server, path, deep, token)
        assert resp.status_code == 400 and "nested deeper" in resp.json()["message"]
    moderately = b'{"inputs": {"duration": 0, "x": ' + b"[" * 100 + b"]" * 100 + b"}}"
    resp = _post(local_server, "/api/apps/sleep", moderately, local_server.token)
    assert resp.status_code == 400 and "nested deeper than 64" in resp.json()["message"]


@pytest.mark.parametrize(("path", "body", "needs_token"), [
    ("/api/auth/access_token", b'{"username": "\\ud800", "password": "x"}', False),
    ("/api/auth/access_token", b'{"username": "alice", "password": "\\udfff"}', False),
    ("/api/auth/access_token",
     b'{"username": "alice", "password": "alice-password-123", "label": "\\ud800"}', False),
    ("/api/apps/sleep", b'{"name": "a\\ud800b", "inputs": {"duration": 0}}', True),
    ("/api/apps/sleep", b'{"inputs": {"duration": 0, "\\ud800": 1}}', True),
    ("/api/apps/wordcount-map", b'{"inputs": {"posts": "/api/files/temp/\\ud800/x"}}', True),
])
def test_lone_surrogates_are_400(local_server, path, body, needs_token):
    resp = _post(local_server, path, body, local_server.token if needs_token else None)
    assert resp.status_code == 400, resp.text
    assert "lone surrogate" in resp.json()["message"]


def test_invalid_utf8_is_400(local_server):
    resp = _post(local_server, "/api/apps/sleep", b'{"name": "\xff", "inputs": {}}',
                 local_server.token)
    assert resp.status_code == 400 and "UTF-8" in resp.json()["message"]
