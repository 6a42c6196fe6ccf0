"""Workspaces through Everest jobs on the local server (its embedded relay, beside its data):
a ``jupyter-session`` job saves a notebook and a 5 MB file; an Everest cancel ends it; the
next job's session opens the workspace byte-identical; an older snapshot restores into a new
session, and a read-only session gets a copy that nothing saves back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import requests

from tests.harness.server import ServerProcess
from tests.session.helpers import Api, split_url, wait_for

WAIT = 180


def _relay(local_server: ServerProcess) -> Api:
    path = local_server.data_dir / "relay.json"
    wait_for(path.exists, 60, "the embedded relay")  # it starts beside the server
    info = json.loads(path.read_text())
    return Api(info["url"], local_server.token_for("alice"))


def _contents(base: str, token: str, path: str = "") -> dict:
    resp = requests.get(f"{base}api/contents/{path}", timeout=30,
                        headers={"Authorization": f"token {token}"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _put_file(base: str, token: str, path: str, text: str) -> None:
    resp = requests.put(f"{base}api/contents/{path}", timeout=30,
                        headers={"Authorization": f"token {token}"},
                        json={"type": "file", "format": "text", "content": text})
    assert resp.status_code in (200, 201), resp.text


def _digest(base: str, token: str, path: str) -> str:
    resp = requests.get(f"{base}files/{path}", timeout=60,
                        headers={"Authorization": f"token {token}"})
    assert resp.status_code == 200, resp.text
    return hashlib.sha256(resp.content).hexdigest()


def _start(local_server: ServerProcess, relay: Api, **workspace) -> tuple[str, str, str, str]:
    """A relay session with ``workspace`` options and its job; (session id, job id, base,
    token) once ready."""
    session = relay.new_session(**workspace)
    job = local_server.client("alice").submit("jupyter-session", {
        "ticket": session["ticket"], "relay": relay.url, "idle_timeout": 0,
        "time_limit": 900})
    ready = wait_for(lambda: (s := relay.session(session["id"]))["state"] == "ready" and s,
                     WAIT, "the session to be ready")
    base, token = split_url(ready["url"])
    return session["id"], job.id, base, token


def _runner_log(local_server: ServerProcess, job_id: str) -> str:
    client = local_server.client("alice")
    uri = (client.job(job_id).result or {}).get("log")
    return client.read(uri).decode(errors="replace")[-4000:] if uri else "(no log)"


def _cancel(local_server: ServerProcess, job_id: str) -> str:
    client = local_server.client("alice")
    client.cancel(job_id)
    return str(client.wait(job_id, timeout=WAIT).state)


def test_an_everest_cancel_keeps_the_work_and_history_restores(
        local_server: ServerProcess, tmp_path: Path) -> None:
    relay = _relay(local_server)
    data = os.urandom(5 * 1024 * 1024)
    sid, job_id, base, token = _start(local_server, relay, workspace="everest")
    try:
        _put_file(base, token, "analysis.ipynb", json.dumps(
            {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
        # a 5 MB file written by the kernel's side of the world: the user's code
        resp = requests.post(f"{base}api/contents", timeout=30,
                             headers={"Authorization": f"token {token}"},
                             json={"type": "directory"})
        assert resp.status_code == 201
        folder = resp.json()["path"]
        resp = requests.put(f"{base}api/contents/{folder}/data.bin", timeout=60,
                            headers={"Authorization": f"token {token}"},
                            json={"type": "file", "format": "base64",
                                  "content": base64.b64encode(data).decode()})
        assert resp.status_code in (200, 201), resp.text
        first = {p: _digest(base, token, p) for p in ("analysis.ipynb", f"{folder}/data.bin")}
    finally:
        state = _cancel(local_server, job_id)
    assert state == "CANCELLED"
    view = relay.session(sid)
    assert view["state"] == "ended"
    assert (view["workspace"]["report"] or {}).get("saved") is True, _runner_log(
        local_server, job_id)

    sid2, job2, base, token = _start(local_server, relay, workspace="everest")
    try:
        assert {p: _digest(base, token, p) for p in first} == first
        _put_file(base, token, "analysis.ipynb", "changed")
    finally:
        _cancel(local_server, job2)
    assert relay.session(sid2)["workspace"]["report"]["saved"] is True

    # the first session's snapshot, restored into a new session; read-only beside it
    snapshots_dir = local_server.data_dir / "relay" / "workspaces" / "alice" / "everest" / \
        "snapshots"
    snaps = [json.loads(p.read_text()) for p in snapshots_dir.glob("*/snapshot.json")]
    by_session = {s["session_id"]: s["id"] for s in snaps}
    assert set(by_session) >= {sid, sid2}
    sid3, job3, base, token = _start(local_server, relay, workspace="everest",
                                     snapshot=by_session[sid])
    try:
        assert _digest(base, token, "analysis.ipynb") == first["analysis.ipynb"]
        busy = relay("POST", "/api/sessions", json={"workspace": "everest"})
        assert busy.status_code == 409 and sid3 in busy.json()["message"]
        sid4, job4, base4, token4 = _start(local_server, relay, workspace="everest",
                                           read_only=True)
        try:
            _put_file(base4, token4, "scratch.txt", "never kept")
        finally:
            _cancel(local_server, job4)
        assert relay.session(sid4)["workspace"]["read_only"] is True
    finally:
        _cancel(local_server, job3)
    current = snapshots_dir.parent / "current"
    assert not (current / "scratch.txt").exists()
    assert hashlib.sha256((current / "analysis.ipynb").read_bytes()).hexdigest() == \
        first["analysis.ipynb"]
