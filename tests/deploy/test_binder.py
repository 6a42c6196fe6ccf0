"""The Binder of this repository: what repo2docker builds from ``binder/``, and the ``start``
script run directly in a fresh environment (no server, no configuration): it brings up the
embedded local server, and the example notebooks and ``everest-jupyter launch`` work
against it; with an Everest given, it starts nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.processes import cli_command
from tests.harness.server import kill_tasks_under
from tests.orchestrator.test_examples import execute, text_of
from tests.session.helpers import split_url, wait_for

REPO = Path(__file__).resolve().parents[2]
START = REPO / "binder" / "start"
SHOW_ENV = [sys.executable, "-c", "import json, os; print(json.dumps({k: v for k, v in "
            "os.environ.items() if k.startswith('EVEREST_')}))"]


def test_repo2docker_installs_the_project_after_the_source_then_runs_postbuild_and_start(
        ) -> None:
    out = subprocess.run([sys.executable, "-m", "repo2docker", "--no-build", "--debug",
                          str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    dockerfile = (out.stdout + out.stderr).splitlines()

    def line_of(pattern: str) -> int:
        found = [i for i, line in enumerate(dockerfile) if re.search(pattern, line)]
        assert len(found) == 1, f"{pattern!r} appears {len(found)} times"
        return found[0]

    copy_source = line_of(r"^COPY .*src/ \$\{REPO_DIR\}/$")
    install = line_of(r'^RUN .*pip install --no-cache-dir -r "binder/requirements.txt"$')
    post_build = line_of(r"^RUN \./binder/postBuild$")
    entrypoint = line_of(r'^ENV R2D_ENTRYPOINT="\$\{REPO_DIR\}/binder/start"$')
    assert copy_source < install < post_build < entrypoint
    assert "Building conda environment for python=3.11" in dockerfile  # binder/runtime.txt


@pytest.fixture
def fresh_env(real_components: None, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh HOME and data folders, no Everest configured; the embedded server that
    ``start`` brings up in them is stopped at the end."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVEREST_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"),
               PATH=os.pathsep.join((str(Path(sys.executable).parent), env["PATH"])))
    home.mkdir()
    try:
        yield env
    finally:
        subprocess.run([*cli_command(), "server", "stop", "--data-dir",
                        str(home / ".local/share/everest-jupyter/server")], env=env,
                       capture_output=True, timeout=120)
        kill_tasks_under(home)


def test_start_brings_up_the_local_server_for_the_examples_and_launch(
        fresh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run([str(START), *SHOW_ENV], env=fresh_env, cwd=REPO,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    given = json.loads(out.stdout)  # what JupyterLab, its kernels and terminals inherit
    assert set(given) == {"EVEREST_URL", "EVEREST_TOKEN", "EVEREST_RELAY_URL"}
    assert requests.get(given["EVEREST_URL"] + "/api/auth/access_token", timeout=10, headers={
        "Authorization": f"Bearer {given['EVEREST_TOKEN']}"}).status_code == 200

    for name, value in given.items():  # the notebooks' kernels run with start's environment
        monkeypatch.setenv(name, value)
    for notebook, expected in (("lorenz_sweep.ipynb", "chaotic (L1 > 0.05) from rho = 25.0"),
                               ("wordcount.ipynb", "OK: ")):
        work = tmp_path / notebook.split(".")[0]
        work.mkdir()
        assert expected in text_of(execute(notebook, work))

    env = {**fresh_env, **given}
    launched = subprocess.run([*cli_command(), "--json", "launch", "--detach", "--time-limit",
                               "300"], env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr
    session = json.loads(launched.stdout)
    base, token = split_url(session["url"])
    wait_for(lambda: requests.get(base + "api/status", timeout=10, headers={
        "Authorization": f"token {token}"}).ok, what="the launched session")
    stopped = subprocess.run([*cli_command(), "stop", session["session_id"]], env=env,
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr


def test_start_with_an_everest_given_starts_nothing(fresh_env: dict[str, str]) -> None:
    given = {"EVEREST_URL": "https://everest.example.org", "EVEREST_TOKEN": "t" * 40}
    out = subprocess.run([str(START), *SHOW_ENV], env={**fresh_env, **given}, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == given
    assert not (Path(fresh_env["HOME"]) / ".local/share/everest-jupyter").exists()
