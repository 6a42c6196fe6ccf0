"""What a task on an SSH host leaves running ends with it: a double-forked ``nohup sleep``
(in the remote wrapper's process group) and a ``setsid`` daemon that kept its environment.
The SSH host is this machine, so the test (root) sees the remote processes in /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from everest_app.states import JobState
from tests.harness.server import start_server
from tests.resources import kit
from tests.server.test_task_ends import job_processes

APPS = Path(__file__).resolve().parents[1] / "server" / "leftover_apps"

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0, reason="reads another account's /proc")]


def test_a_task_on_an_ssh_host_leaves_nothing_running(sshd_server, tmp_path: Path) -> None:
    resources = kit.write_resources(tmp_path / "resources.yaml",
                                    [sshd_server.resource("login")])
    server = start_server(tmp_path / "data", apps=[APPS / "leaves"],
                          extra_args=["--resources", str(resources)])
    try:
        client = server.client()
        for end, state in (("0-now", JobState.DONE), ("3-now", JobState.FAILED)):
            job = client.wait(client.submit("leaves", {"end": end}, resources=["login"]).id,
                              timeout=120)
            assert job.state == state, (job.raw, client.log(job.id))
            assert len(job.result.get("pids", "").split()) == 2 or state is JobState.FAILED
            assert job_processes(job.id) == {}
    finally:
        server.close()
