"""Tasks cannot reach the server's state or other users' files: a server running as root
runs each task as an unprivileged account (here one per user), in a folder only that
account can read; a server that cannot switch accounts refuses several users unless told.

The probe is a real task (``apps/peek``) that tries to read paths and reports per path."""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from everest_local.auth import add_user
from tests.fixtures.task_accounts import ensure_passable
from tests.harness.server import REPO, ServerProcess, wait_for_state
from tests.session.helpers import wait_for

HERE = Path(__file__).resolve().parent
PEEK = HERE / "apps" / "peek"
SLOW = HERE / "apps" / "slow-echo"
SWAP = HERE / "apps" / "swap-work"
HOLD = HERE / "apps" / "hold"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root; "
                                "the non-root rules are tested below as an account of root's")


@pytest.fixture(scope="module")
def server(real_components: None,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("isolated") / "data",
                         apps=[PEEK, SLOW, SWAP, HOLD],
                         extra_args=["--task-user-for", "alice=everest-task-a",
                                     "--task-user-for", "bob=everest-task-b",
                                     "--plugin", "launcher.relay.plugin"])
    try:
        yield proc.start()
    finally:
        proc.close()


def _peek(server: ServerProcess, user: str, paths: list[str]) -> tuple[int, dict[str, str]]:
    client = server.client(user)
    job = client.wait(client.submit("peek", {"paths": paths}).id, timeout=60)
    assert job.state == "DONE", job.raw
    report = dict(reversed(line.split(" ", 1)) for line in job.result["report"].splitlines())
    return job.result["uid"], report


def test_a_task_reaches_neither_the_server_nor_the_relay_nor_another_user(
        server: ServerProcess, tmp_path: Path) -> None:
    data = server.data_dir
    wait_for((data / "relay" / "relay.sqlite").exists, what="the embedded relay's state")
    secret = tmp_path / "bobs.txt"
    secret.write_text("bob's data")
    server.client("bob").upload(secret)
    with sqlite3.connect(data / "everest.sqlite3") as db:
        bobs_file = db.execute("SELECT path FROM files WHERE owner='bob'").fetchone()[0]
    bob = server.client("bob")
    running = bob.submit("slow-echo", {"duration": 60, "text": "bob"})
    try:
        wait_for_state(bob, running.id, "RUNNING")
        bobs_work = data / "tasks" / f"{running.id}-0-0" / "work"
        wait_for((bobs_work / "slow.py").exists, what="bob's task folder")
        targets = [str(p) for p in (
            data / "everest.sqlite3", data / "everest.sqlite3-wal", data,
            data / "relay" / "relay.sqlite", data / "relay" / "runner_secret",
            data / "relay" / "ssh_host_ed25519_key", data / "files", bobs_file,
            bobs_work / "slow.py", bobs_work)]
        uid, report = _peek(server, "alice", [*targets, "peek.py"])
    finally:
        bob.cancel(running.id)
    assert uid == pwd.getpwnam("everest-task-a").pw_uid  # not root, not the server
    assert report.pop("peek.py") == "READ"  # the probe can read: its own folder
    assert report == {t: "DENIED" for t in targets}


def test_state_files_are_private(server: ServerProcess) -> None:
    data = server.data_dir
    wait_for((data / "relay" / "relay.sqlite").exists, what="the embedded relay's state")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (
        data / "everest.sqlite3", data / "files", data / "relay", data / "relay" / "relay.sqlite")}
    assert modes == {"everest.sqlite3": 0o600, "files": 0o700, "relay": 0o700,
                     "relay.sqlite": 0o600}
    assert data.stat().st_mode & 0o777 == 0o711  # passable to task folders, not listable


def test_each_user_gets_their_own_account(server: ServerProcess) -> None:
    uid, report = _peek(server, "bob", ["."])
    assert uid == pwd.getpwnam("everest-task-b").pw_uid and report == {".": "READ"}


def _run_server_as(account: str, data: Path, *extra: str) -> subprocess.CompletedProcess:
    entry = pwd.getpwnam(account)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "everest_local", "--port", "0", "--data-dir", str(data),
         *extra], user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], env=env,
        capture_output=True, text=True, timeout=60, cwd=data)


def test_a_server_that_cannot_switch_accounts_refuses_several_users(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ensure_passable(data)
    for name in ("ann", "ben"):
        add_user(data, name, "pw-123456")
    entry = pwd.getpwnam("everest-task")
    for path in (data, *data.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    refused = _run_server_as("everest-task", data)
    assert refused.returncode == 2
    assert "has 2 users but runs as everest-task" in refused.stderr
    assert "--allow-shared-task-user" in refused.stderr
    # the admin accepts it explicitly: the server starts
    entry = pwd.getpwnam("everest-task")
    accepted = subprocess.Popen(
        [sys.executable, "-m", "everest_local", "--port", "0", "--data-dir", str(data),
         "--allow-shared-task-user"], user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
        env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(data)}, cwd=data,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (data / "server.json").exists() or accepted.poll() is not None,
                 what="the server to start")
        assert accepted.poll() is None and (data / "server.json").exists()
    finally:
        accepted.terminate()
        accepted.wait(30)


# -- a task cannot make the server read or move what is not in its own folder (issue 20.1) --

SWAP_ON_IMPORT = """import os
os.chdir("..")
os.rename("work", "work.gone")
os.symlink({target!r}, "work")
os._exit(0)
"""


def _root_only_folder(tmp_path: Path) -> Path:
    """A folder of root's (0700) holding files named like wordcount-map's outputs, 0600."""
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    for name, text in (("counts-secret.txt", "root's counts\n"), ("splits.txt", "root secret"),
                       ("words.txt", "1\n"), ("total.txt", "1\n")):
        (secret / name).write_text(text)
        (secret / name).chmod(0o600)
    return secret


def test_the_built_in_map_app_cannot_be_turned_on_a_root_only_folder(
        server: ServerProcess, tmp_path: Path) -> None:
    """wordcount-map runs ``python3 wordcount_map.py <posts>`` in its work folder, so a
    posts file uploaded as ``json.py`` is what its ``import json`` runs: that code replaces
    work/ with a link to a root-only folder holding files named like the app's outputs and
    exits 0. The job fails saying so; nothing of the folder is read or moved."""
    secret = _root_only_folder(tmp_path)
    before = {p.name: p.read_bytes() for p in secret.iterdir()}
    alice = server.client("alice")
    hostile = tmp_path / "json.py"
    hostile.write_text(SWAP_ON_IMPORT.format(target=str(secret)))
    uri = alice.upload(hostile)["uri"]
    job = alice.wait(alice.submit("wordcount-map", {"posts": uri}).id, timeout=60)
    assert job.state == "FAILED", job.raw
    assert f"its work folder was replaced by a link (to {secret})" in job.info
    assert "root secret" not in str(job.raw) and not job.result
    assert {p.name: p.read_bytes() for p in secret.iterdir()} == before
    assert {p.stat().st_mode & 0o777 for p in secret.iterdir()} == {0o600}


def test_a_task_cannot_take_another_users_running_outputs(
        server: ServerProcess, tmp_path: Path) -> None:
    """alice's task links its work/ to bob's running task's folder (named on the world-
    readable command line): her job fails, bob's output stays his and his job gets it."""
    bob, alice = server.client("bob"), server.client("alice")
    held = bob.submit("hold", {"text": "bob's result"})
    bobs_work = server.data_dir / "tasks" / f"{held.id}-0-0" / "work"
    wait_for((bobs_work / "copy.txt").exists, what="bob's task to write its outputs")
    job = alice.wait(alice.submit("swap-work", {"target": str(bobs_work)}).id, timeout=60)
    assert job.state == "FAILED", job.raw
    assert "its work folder was replaced by a link" in job.info and not job.result
    assert (bobs_work / "copy.txt").read_text() == "bob's result"
    (bobs_work / "release").touch()
    done = bob.wait(held.id, timeout=60)
    assert done.state == "DONE", done.raw
    assert bob.read(done.result["file"]) == b"bob's result"
