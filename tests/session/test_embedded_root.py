"""The README's first command run as root on a fresh machine: the embedded default creates
the missing task account and lets it pass through the folders on the way to Python.

The account is a throwaway one named in the embedded server's config file
(``server_config.py``), so the shared ``everest-task`` is never touched; it is deleted after.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from everest_local.task_users import prepare_for_root
from tests.fixtures.cli_home import CliHome
from tests.harness.processes import REPO
from tests.harness.server import kill_tasks_under
from tests.session.helpers import split_url

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a root server switches "
                                "accounts; the suite runs as root")


@pytest.fixture(scope="module")
def account() -> Iterator[str]:
    """A unique account name that does not exist yet; the account is deleted after."""
    name = "evt-" + secrets.token_hex(4)
    yield name
    subprocess.run(["userdel", name], capture_output=True)


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_launch_as_root_creates_the_task_account_and_the_session_answers(
        account: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    user = CliHome(tmp_path_factory.mktemp("root-home"))
    config = user.home / ".config/everest-jupyter/server_config.py"
    config.parent.mkdir(parents=True)
    config.write_text(f"c.ServerSettings.task_user = {account!r}\n")
    with pytest.raises(KeyError):
        pwd.getpwnam(account)
    try:
        result = user.cli("launch", "--detach", "--json", "--time-limit", "600")
        assert result.returncode == 0, result.stderr
        said = f"created the unprivileged account {account} that session tasks run as"
        assert result.stderr.count(said) == 1
        entry = pwd.getpwnam(account)
        assert entry.pw_shell == "/usr/sbin/nologin" and entry.pw_uid != 0
        base, token = split_url(json.loads(result.stdout)["url"])
        status = requests.get(base + "api/status",
                              headers={"Authorization": f"token {token}"}, timeout=10)
        assert status.status_code == 200
        assert processes_of(entry.pw_uid)  # the session runs as the new account
        again = user.cli("server", "start")  # already prepared: nothing more is said
        assert again.returncode == 0 and "created" not in again.stderr
    finally:
        user.close()
        info = user.data_dir / "server" / "server.json"
        tasks = json.loads(info.read_text()).get("tasks") if info.exists() else None
        if tasks:
            kill_tasks_under(Path(tasks))


def test_a_private_folder_on_the_way_to_python_gets_search_permission_only(
        account: str, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    venv = private / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    prepare_for_root(account, lambda msg: None)  # the account exists from here on
    entry = pwd.getpwnam(account)

    def run_as_account() -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"],
                              user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                              cwd="/", capture_output=True, text=True)

    with pytest.raises(PermissionError):  # …/private is 0700: Python is out of reach
        run_as_account()
    prepared = subprocess.run(
        [str(python), "-c", "import sys; from everest_local.task_users import "
         "prepare_for_root; prepare_for_root(sys.argv[1], print)", account],
        env=env, capture_output=True, text=True, check=True)
    assert str(private) in prepared.stdout, prepared.stdout
    assert stat.S_IMODE(private.stat().st_mode) == 0o701  # o+x, never read
    ran = run_as_account()
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == str(venv)
    again = subprocess.run(prepared.args, env=env, capture_output=True, text=True, check=True)
    assert again.stdout == ""  # nothing left to change, nothing said
