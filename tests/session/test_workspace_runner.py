"""Workspaces with the real session runner, a real JupyterLab and a real relay: a session
saves a notebook (through JupyterLab's contents API, as the browser does) and a 5 MB file;
however it ends — time limit, idle timeout, SIGTERM (a job cancel or ``stop``), a stop at
the relay, ``kill -9`` — the next session opens the workspace with the same bytes (after
kill -9: what was saved before it), over the SSH port and inside the WebSocket; ignores stay
out; a failed final save is said in summary.json and to the relay."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.harness.relay import RelayProcess
from tests.harness.runner import start_runner, stop_process_group
from tests.harness.server import ServerProcess
from tests.session.helpers import Api, kill_under, split_url, wait_for

SAVE_EVERY = 1.0


@pytest.fixture(scope="module")
def relay(local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("wsrelay") / "state", local_server.url,
                        "--workspace-save-interval", str(SAVE_EVERY))
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def alice(relay: RelayProcess, local_server: ServerProcess) -> Api:
    return Api(relay.url, local_server.token_for("alice"))


@dataclass
class Run:
    sid: str
    workdir: Path
    proc: subprocess.Popen
    base: str = ""
    token: str = ""

    @property
    def notebooks(self) -> Path:
        return self.workdir / "notebooks"

    def summary(self) -> dict:
        return json.loads((self.workdir / "summary.json").read_text())

    def put_notebook(self, path: str, cells: list[str]) -> None:
        """Save a notebook the way JupyterLab's browser side does."""
        nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
              "cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [],
                         "execution_count": None, "id": f"c{i}"} for i, c in enumerate(cells)]}
        resp = requests.put(f"{self.base}api/contents/{quote(path)}", timeout=30,
                            headers={"Authorization": f"token {self.token}"},
                            json={"type": "notebook", "format": "json", "content": nb})
        assert resp.status_code in (200, 201), resp.text

    def listed(self) -> set[str]:
        resp = requests.get(f"{self.base}api/contents", timeout=30,
                            headers={"Authorization": f"token {self.token}"})
        return {item["name"] for item in resp.json()["content"]}


def _start(api: Api, relay: RelayProcess, workdir: Path, *args: str, **body) -> Run:
    session = api.new_session(**body)
    proc = start_runner(workdir, relay.url, session["ticket"], "--idle-timeout", "0", *args)
    run = Run(session["id"], workdir, proc)
    try:
        ready = api.wait_state(run.sid, "ready", timeout=120)
    except BaseException:
        print((workdir / "runner.out").read_text())
        stop_process_group(proc)
        raise
    run.base, run.token = split_url(ready["url"])
    return run


def _working_copy(relay: RelayProcess, name: str) -> Path:
    return relay.state_dir / "workspaces" / "alice" / quote(name, safe="") / "current"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """Every file's digest (a link's target), leaving out what the default ignores do
    (JupyterLab's checkpoints)."""
    return {str(p.relative_to(root)): (f"link:{os.readlink(p)}" if p.is_symlink()
                                       else _digest(p))
            for p in sorted(root.rglob("*")) if (p.is_symlink() or p.is_file())
            and ".ipynb_checkpoints" not in p.relative_to(root).parts}


def _end(run: Run, how: str, api: Api) -> None:
    if how == "sigterm":
        run.proc.send_signal(signal.SIGTERM)
    elif how == "relay-stop":
        assert api("DELETE", f"/api/sessions/{run.sid}").status_code == 200
    # time limit and idle timeout end by themselves
    code = run.proc.wait(120)
    assert code == 0, (run.workdir / "runner.out").read_text()[-3000:]


@pytest.mark.parametrize("route", ["ssh", "websocket"])
def test_the_workspace_survives_every_graceful_end(relay, alice, tmp_path, route) -> None:
    name = f"survive-{route}"
    data = os.urandom(5 * 1024 * 1024)
    ends = [("time-limit", ["--time-limit", "25"]),
            ("idle", ["--idle-timeout", "6"]),
            ("sigterm", []),
            ("relay-stop", [])]
    expected: dict[str, str] | None = None
    for i, (how, args) in enumerate(ends):
        run = _start(alice, relay, tmp_path / f"{how}", f"--route={route}", *args,
                     workspace=name)
        try:
            if expected is not None:  # restored before JupyterLab started, byte-identical
                assert _tree(run.notebooks) == expected
                assert {"analysis.ipynb", "data.bin"} <= run.listed()
            run.put_notebook("analysis.ipynb", [f"print({i})"])
            (run.notebooks / "data.bin").write_bytes(data[i:] + data[:i])
            (run.notebooks / "sub").mkdir(exist_ok=True)
            (run.notebooks / "sub" / f"from-{how}.txt").write_text(how)
            (run.notebooks / ".ipynb_checkpoints").mkdir(exist_ok=True)
            (run.notebooks / ".ipynb_checkpoints" / "junk").write_text("x")
            if i == 0:
                os.symlink("data.bin", run.notebooks / "data-link")
            assert (run.notebooks / ".ipynb_checkpoints" / "junk").exists()
            expected = _tree(run.notebooks)
            _end(run, how, alice)
            summary = run.summary()
            ws = summary["workspace"]
            assert ws["saved"] is True and ws["name"] == name, summary
            assert ws["files"] == len([k for k, v in expected.items()
                                       if not v.startswith("link:")])
            view = alice.session(run.sid)
            assert view["state"] == "ended" and view["workspace"]["report"]["saved"]
        finally:
            stop_process_group(run.proc)
            kill_under(run.workdir)
    assert _tree(_working_copy(relay, name)) == expected
    assert not (_working_copy(relay, name) / ".ipynb_checkpoints").exists()
    resp = alice("GET", "/api/sessions?all=1")
    assert resp.status_code == 200


def test_after_kill_9_what_was_saved_comes_back(relay, alice, tmp_path) -> None:
    name = "killed"
    run = _start(alice, relay, tmp_path / "one", workspace=name)
    try:
        run.put_notebook("kept.ipynb", ["1 + 1"])
        (run.notebooks / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
        saved = _tree(run.notebooks)
        # no sleeping: wait until the relay holds it (the save window), then kill -9
        wait_for(lambda: _tree(_working_copy(relay, name)) == saved, 30,
                 "the saves to reach the relay")
        stop_process_group(run.proc, signal.SIGKILL)
        kill_under(run.workdir)
        # the job is gone; the user (or the launcher, seeing the job end) stops the session
        assert alice("DELETE", f"/api/sessions/{run.sid}").status_code == 200
    finally:
        stop_process_group(run.proc)
        kill_under(run.workdir)
    again = _start(alice, relay, tmp_path / "two", workspace=name)
    try:
        assert _tree(again.notebooks) == saved
    finally:
        stop_process_group(again.proc, signal.SIGTERM)
        kill_under(again.workdir)


def test_a_failed_final_save_is_said(relay, alice, tmp_path) -> None:
    """A file over the relay's per-file limit cannot be saved: the summary, the runner's
    exit code and the relay's view of the session all say so."""
    name = "toolarge"
    run = _start(alice, relay, tmp_path / "one", workspace=name)
    try:
        relay_limit = 2 << 30
        big = run.notebooks / "huge.bin"
        with open(big, "wb") as f:  # sparse: over the limit without the disk
            f.truncate(relay_limit + 1)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(120) == 1
        ws = run.summary()["workspace"]
        assert ws["saved"] is False and "huge.bin" in ws["error"], ws
        assert "NOT saved" in run.summary()["reason"]
        report = alice.session(run.sid)["workspace"]["report"]
        assert report["saved"] is False and "huge.bin" in report["error"]
        assert not (_working_copy(relay, name) / "huge.bin").exists()
    finally:
        stop_process_group(run.proc)
        kill_under(run.workdir)
