"""The session runner before JupyterLab starts: reading its inputs, refusing bad ones and
refused tickets, running on an old Python without JupyterLab, and bootstrapping a cached
virtual environment with extra packages. All real processes; no JupyterLab needed."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness.processes import child_env
from tests.harness.relay import RelayProcess
from tests.harness.runner import RUNNER, new_key, public_text, redeem
from tests.session.helpers import Api, tiny_wheel

OLD_PYTHONS = sorted(glob.glob(os.path.join(os.environ.get("PYENV_ROOT", "/root/.pyenv"),
                                             "versions", "3.8*", "bin", "python")))


def _run(workdir: Path, *args: str, python: str = sys.executable,
         timeout: float = 120) -> tuple[int, dict, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, str(RUNNER), *args], cwd=workdir, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    summary = json.loads((workdir / "summary.json").read_text())
    return proc.returncode, summary, (workdir / "session.log").read_text()


def test_inputs_come_from_the_files_everest_writes(relay: RelayProcess, tmp_path: Path) -> None:
    (tmp_path / "relay.txt").write_text(relay.url + "\n")
    (tmp_path / "ticket.txt").write_text("f" * 40)
    (tmp_path / "time_limit.txt").write_text("ten minutes")
    code, summary, log = _run(tmp_path)
    assert code == 2
    assert summary["reason"] == "bad input"
    assert "'time_limit' must be a number" in summary["error"] and "time_limit" in log

    (tmp_path / "time_limit.txt").write_text("600.0")  # numbers may come as floats
    code, summary, _ = _run(tmp_path)
    assert code == 1 and "refused the ticket" in summary["error"]  # read, used, refused


def test_bad_inputs_are_named(relay: RelayProcess, tmp_path: Path) -> None:
    cases = [([f"--relay={relay.url}"], "'ticket' is missing"),
             (["--relay=ftp://example.org", "--ticket=x"], "must start with http"),
             ([f"--relay={relay.url}", "--ticket=x", "--mode=shell"], "'mode' must be one of"),
             ([f"--relay={relay.url}", "--ticket=x", "--packages=-e ."], "is an option"),
             ([f"--relay={relay.url}", "--ticket=x", "--repository=--upload-pack=x"],
              "must be a git URL"),
             ([f"--relay={relay.url}", "--ticket=x", "--default-url=lab"], "must be a path"),
             ([f"--relay={relay.url}", "--ticket=x", "--base-url=/session/../x/"],
              "'base_url' must be a path"),
             ([f"--relay={relay.url}", "--ticket=x", "--base-url=--port=1"],
              "'base_url' must be a path")]
    for i, (args, message) in enumerate(cases):
        code, summary, _ = _run(tmp_path / str(i), *args)
        assert code == 2, args
        assert message in summary["error"], (args, summary)


def test_a_used_ticket_is_refused_at_once(relay: RelayProcess, alice: Api,
                                          tmp_path: Path) -> None:
    session = alice.new_session()
    assert redeem(relay.url, session["ticket"], public_text(new_key())).status_code == 200
    code, summary, log = _run(tmp_path, f"--relay={relay.url}",
                              f"--ticket={session['ticket']}")
    assert code == 1
    assert summary["reason"] == "error" and "already used" in summary["error"]
    assert "JupyterLab" not in log  # nothing was started


def _bare_venv(base: str, where: Path) -> str:
    """A virtual environment without JupyterLab or asyncssh (and without pip: fast)."""
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    return str(where / "bin" / "python")


def test_without_jupyterlab_and_without_bootstrap_it_says_what_is_missing(
        relay: RelayProcess, tmp_path: Path) -> None:
    # the oldest Python the runner supports when this machine has it, else this one
    python = _bare_venv(OLD_PYTHONS[0] if OLD_PYTHONS else sys.executable, tmp_path / "venv")
    code, summary, log = _run(tmp_path / "task", f"--relay={relay.url}", "--ticket=x",
                              "--no-bootstrap", python=python)
    assert code == 1, log
    assert "jupyterlab and asyncssh not installed" in summary["error"]
    assert "bootstrap is off" in log


def test_extra_packages_bootstrap_a_cached_environment(relay: RelayProcess,
                                                       tmp_path: Path) -> None:
    wheel = tiny_wheel(tmp_path)
    cache = tmp_path / "cache"
    args = [f"--relay={relay.url}", "--ticket=" + "0" * 40, f"--packages={wheel}",
            f"--venv-cache={cache}"]
    code, summary, log = _run(tmp_path / "first", *args, timeout=300)
    assert code == 1 and "refused the ticket" in summary["error"]  # got as far as redeeming
    assert "creating the environment" in log
    venv_python = summary["python"]
    assert venv_python.startswith(str(cache)) and "running the session in" in log
    check = subprocess.run([venv_python, "-c", "import tinypkg, jupyterlab, asyncssh; "
                            "print(tinypkg.ANSWER)"], capture_output=True, text=True)
    assert check.stdout.strip() == "42", check.stderr

    code, summary, log = _run(tmp_path / "second", *args)
    assert summary["python"] == venv_python
    assert "creating the environment" not in log  # the cached one is reused


def test_a_failed_pip_install_is_reported_as_such(relay: RelayProcess, tmp_path: Path) -> None:
    missing = tmp_path / "nope-1.0-py3-none-any.whl"
    code, summary, log = _run(tmp_path / "task", f"--relay={relay.url}", "--ticket=x",
                              f"--packages={missing}", f"--venv-cache={tmp_path / 'cache'}",
                              timeout=300)
    assert code == 1
    error = summary["error"]
    assert error.startswith(f"could not prepare the environment: pip could not install "
                            f"{missing} (3 attempts); pip said: "), error
    assert "does not exist" in error  # pip's own words about the wheel
    assert "bootstrap is off" not in error and "bootstrap is off" not in log
