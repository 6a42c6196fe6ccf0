"""The service units in deploy/systemd: ``systemd-analyze verify`` accepts them (with the
install prefix pointed at this environment, so the programs they name exist), and the
command line each unit runs, expanded the way systemd expands it from its example settings
file, starts a working relay (HTTPS with the unit's credential paths) and local server."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.harness.processes import free_port
from tests.harness.server import ServerProcess
from tests.relay.test_relay_ssh import _self_signed
from tests.session.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
PREFIX = "/opt/everest-jupyter"  # where docs/deploy.md installs the project


def installed_copy(unit: str, folder: Path) -> Path:
    """The unit as installed into this test's environment (its prefix: this venv)."""
    text = (UNITS / unit).read_text().replace(PREFIX, sys.prefix)
    path = folder / unit
    path.write_text(text)
    return path


@pytest.mark.parametrize("unit", ["everest-jupyter-relay.service",
                                  "everest-jupyter-server.service"])
def test_systemd_analyze_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    assert PREFIX in (UNITS / unit).read_text()
    out = subprocess.run(["systemd-analyze", "verify", str(installed_copy(unit, tmp_path))],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def exec_start(unit: Path, env: dict[str, str]) -> list[str]:
    """``ExecStart=`` of ``unit`` as systemd runs it: ``${VAR}`` becomes one word,
    ``$VAR`` is split on white space (systemd.service(5), "Command lines")."""
    text = unit.read_text().replace("\\\n", " ")
    line = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    words = []
    for word in shlex.split(line):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words += env.get(whole.group(1), "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                                lambda m: env.get(m.group(1), ""), word))
    return words


def settings(example: str, **site: str) -> dict[str, str]:
    """The example settings file's values, with this test's site-specific ones."""
    values = {}
    for line in (UNITS / example).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    assert set(site) <= set(values), "the example file names every setting the unit uses"
    return {**values, **site}


def run_unit(command: list[str], env: dict[str, str], check, log: Path) -> None:
    """Run ``command`` as the unit would, wait until ``check()`` is true, stop it with
    SIGTERM (what systemd sends) and expect a clean exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or check(), what="the service")
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _status(url: str, **kw) -> int | None:
    try:
        return requests.get(url, timeout=5, **kw).status_code
    except requests.RequestException:
        return None


def test_the_relay_unit_runs_a_relay_over_https(local_server: ServerProcess,
                                                tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"  # what LoadCredential= makes
    credentials.mkdir()
    cert, key = _self_signed(credentials)
    os.rename(cert, credentials / "tls.crt")
    os.rename(key, credentials / "tls.key")
    port = free_port()
    env = settings("relay.env.example", EVEREST_URL=local_server.url,
                   RELAY_HTTP=f"127.0.0.1:{port}", RELAY_SSH=f"127.0.0.1:{free_port()}")
    env.update(STATE_DIRECTORY=str(tmp_path / "state"), CREDENTIALS_DIRECTORY=str(credentials))
    command = exec_start(installed_copy("everest-jupyter-relay.service", tmp_path), env)
    assert command[0] == f"{sys.prefix}/bin/everest-jupyter"
    url = f"https://127.0.0.1:{port}/api/relay"
    run_unit(command, env, lambda: _status(url, verify=str(credentials / "tls.crt")) == 200,
             tmp_path / "relay.log")
    assert (tmp_path / "state" / "ssh_host_ed25519_key").exists()  # state where systemd says


@pytest.mark.e2e  # starts a local server (through no fixture)
def test_the_server_unit_runs_a_local_server(tmp_path: Path) -> None:
    port = free_port()
    env = settings("server.env.example", SERVER_HOST="127.0.0.1", SERVER_PORT=str(port))
    env.update(STATE_DIRECTORY=str(tmp_path / "state"), HOME=str(tmp_path / "state"))
    command = exec_start(installed_copy("everest-jupyter-server.service", tmp_path), env)
    # up: it answers, and asks who is calling
    run_unit(command, env, lambda: _status(f"http://127.0.0.1:{port}/api/apps") == 401,
             tmp_path / "server.log")
    assert any((tmp_path / "state").iterdir())
