"""Tasks on an SSH host: a real sshd on a free loopback port, an unprivileged login."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from everest_local.store import DB_NAME
from tests.resources import kit

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ssh_server(real_components: None, sshd_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("ssh-server")
    resources = kit.write_resources(root / "resources.yaml", [
        sshd_server.resource("login"),
        sshd_server.resource("impostor", host_keys=[kit_other_key(root)]),
    ])
    server = kit.serve(root / "data", resources)
    yield server
    server.close()


def kit_other_key(root):
    """A host key the server does not have: pinning it must make logins fail."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "other")],
                   check=True)
    return " ".join((root / "other.pub").read_text().split()[:2])


def test_job_runs_on_the_ssh_host_as_its_user(ssh_server, sshd_server, task_user):
    report = kit.check_roundtrip(ssh_server, "login")
    assert report["marker"] == sshd_server.marker
    assert report["uid"] == task_user.pw_uid
    # the remote task folder is removed once the outputs are back
    assert list((sshd_server.workdir / "ssh-tasks").iterdir()) == []


def test_an_unpinned_host_key_is_refused(ssh_server):
    client = ssh_server.client()
    job = client.submit("probe", {"text": "x"}, resources=["impostor"])
    failed = client.wait(job.id, timeout=60)
    assert failed.state.value == "FAILED"
    assert "impostor" in failed.info and "could not start" in failed.info, failed.info


def test_cancel_signals_the_remote_process_group(ssh_server, sshd_server):
    def on_host(job_id):
        assert _probes_of(sshd_server.user)

    kit.check_cancel(ssh_server, "login", sshd_server.workdir / "ssh-tasks", on_host)
    # the wrapper records the status, then it (and xargs) exit
    deadline = time.monotonic() + 10
    while _probes_of(sshd_server.user) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _probes_of(sshd_server.user)


def test_time_limit_on_the_ssh_host(ssh_server):
    kit.check_time_limit(ssh_server, "login")


def test_kill9_restart_readopts_the_remote_task(ssh_server, sshd_server):
    report, _ = kit.check_kill9_restart(ssh_server, "login", sshd_server.workdir / "ssh-tasks")
    assert report["marker"] == sshd_server.marker


def _probes_of(user):
    """The user's live (not zombie) processes running the probe."""
    out = subprocess.run(["ps", "-u", user, "-o", "stat=,args="], capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines()
            if "probe.py" in line and not line.startswith("Z")]


def _crash_while_staging(server, sshd_server, *, launched: bool) -> tuple[str, str]:
    """Kill -9 the server with a task running on the host, then make its database say the
    task was still STAGING (its handle recorded): the state a crash leaves between storing
    the handle and recording the start. ``launched=False`` also removes the task from the
    host, as if the crash came before the launch. Returns (job id, task folder there)."""
    client = server.client()
    job = client.submit("probe", {"text": "crash", "seconds": 3}, resources=["login"])
    tasks_at = sshd_server.workdir / "ssh-tasks"
    kit._let_it_start(client, job.id, tasks_at)
    server.kill9()
    folder = tasks_at / f"{job.id}-0-0"
    if not launched:
        pgid = int((folder / "pgid").read_text())
        os.killpg(pgid, signal.SIGKILL)
        shutil.rmtree(folder)
    db = sqlite3.connect(server.data_dir / DB_NAME)
    with db:
        db.execute("UPDATE tasks SET state='STAGING' WHERE job_id=?", (job.id,))
    db.close()
    return job.id, str(folder)


def test_a_crash_after_the_launch_readopts_and_does_not_run_twice(ssh_server, sshd_server):
    job_id, _ = _crash_while_staging(ssh_server, sshd_server, launched=True)
    ssh_server.restart()
    client = ssh_server.client()
    done = client.wait(job_id, timeout=60)
    log = client.log(job_id)
    assert done.state.value == "DONE" and "re-adopted" in log, log
    assert log.count("started on") == 1, log


def test_a_crash_before_the_launch_queues_the_job_again(ssh_server, sshd_server):
    job_id, _ = _crash_while_staging(ssh_server, sshd_server, launched=False)
    ssh_server.restart()
    client = ssh_server.client()
    done = client.wait(job_id, timeout=60)
    log = client.log(job_id)
    assert done.state.value == "DONE" and "had not started on login" in log, log
    assert log.count("started on login (") == 2, log  # the first, then the one run to the end


def test_links_in_what_comes_back_are_not_followed(ssh_server, tmp_path):
    kit.check_links_not_followed(ssh_server, "login", tmp_path)
