"""A workspace travels between resource kinds: a session on Docker writes a notebook and a
5 MB file and is cancelled through Everest; the next session — on the SSH host, then inside
a Slurm job, then on this machine — opens it byte-identical and adds its own file.

One server hosts the relay (``--plugin launcher.relay.plugin``) and has one resource of
each kind; the runner dials out to the relay from wherever it runs and saves over SFTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
import requests

from tests.resources import kit
from tests.session.helpers import Api, split_url, wait_for

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def session_server(docker_engine, sshd_server, slurm_cluster, task_user, task_user_dir,
                   tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace-resources")
    resources = kit.every_kind(root / "resources.yaml", docker_engine, sshd_server, task_user,
                               task_user_dir / "workspace-slurm")
    server = kit.serve_sessions(root, resources, slurm_cluster.conf)
    server.session_image = docker_engine.session_image
    yield server
    server.close()


def _auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def _digests(base: str, token: str, paths) -> dict[str, str]:
    out = {}
    for path in paths:
        resp = requests.get(f"{base}files/{path}", headers=_auth(token), timeout=60)
        assert resp.status_code == 200, (path, resp.text)
        out[path] = hashlib.sha256(resp.content).hexdigest()
    return out


def _put(base: str, token: str, path: str, data: bytes) -> None:
    resp = requests.put(f"{base}api/contents/{path}", headers=_auth(token), timeout=120,
                        json={"type": "file", "format": "base64",
                              "content": base64.b64encode(data).decode()})
    assert resp.status_code in (200, 201), resp.text


def test_a_workspace_moves_from_docker_to_ssh_to_slurm_to_local(session_server) -> None:
    server = session_server
    relay = Api(server.relay_url, server.token_for("alice"))
    client = server.client()
    inputs = {"docker": {"image": server.session_image}, "ssh": {}, "slurm": {}, "local": {}}
    where = {"docker": ["box"], "ssh": ["lab"], "slurm": ["hpc"], "local": None}
    notebook = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                           "cells": []}).encode()
    expected: dict[str, str] = {}
    files = {"analysis.ipynb": notebook, "data.bin": os.urandom(5 * 1024 * 1024)}
    for kind in ("docker", "ssh", "slurm", "local"):
        session = relay.new_session(workspace="roaming")
        job = client.submit("jupyter-session", {
            "ticket": session["ticket"], "relay": server.relay_url, "idle_timeout": 0,
            "time_limit": 1200, **inputs[kind]}, resources=where[kind])
        try:
            ready = wait_for(
                lambda s=session: (v := relay.session(s["id"]))["state"] == "ready" and v,
                600, f"the session on {kind}")
            base, token = split_url(ready["url"])
            if expected:
                assert _digests(base, token, expected) == expected, kind
            for path, data in files.items():
                _put(base, token, path, data)
            expected.update({p: hashlib.sha256(d).hexdigest() for p, d in files.items()})
            files = {f"from-{kind}.txt": kind.encode()}
        finally:
            client.cancel(job.id)
        ended = client.wait(job.id, timeout=180)
        assert ended.state.value == "CANCELLED", (kind, client.log(job.id))
        view = relay.session(session["id"])
        assert view["workspace"]["report"] and view["workspace"]["report"]["saved"], \
            (kind, view, client.log(job.id))
