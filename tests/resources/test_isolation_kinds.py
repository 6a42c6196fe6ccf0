"""On every resource kind, a user's job reads nothing of the server's state, the relay's
state or another user's files: locally it runs as an unprivileged account; over SSH and
Slurm as the resource's login (which the server's 0700/0600 state shuts out); in Docker it
sees only its own work folder."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess, start_server
from tests.resources import kit

PEEK = Path(__file__).resolve().parents[1] / "server" / "apps" / "peek"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def every_kind(sshd_server, docker_engine, slurm_cluster, task_user, task_user_dir,
               tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("every-kind")
    resources = kit.write_resources(root / "resources.yaml", [
        sshd_server.resource("login"),
        {"name": "box", "kind": "docker", "image": docker_engine.base_image,
         "docker_host": docker_engine.host, "memory": "256m", "cpus": 1, "uid": "65534"},
        {"name": "hpc", "kind": "slurm", "partition": "debug", "run_as": task_user.pw_name,
         "workdir": str(task_user_dir / "slurm-tasks-isolation"), "poll_interval": 0.2},
    ])
    server = start_server(root / "data", apps=[PEEK],
                          extra_args=["--resources", str(resources),
                                      "--plugin", "launcher.relay.plugin"],
                          env={"SLURM_CONF": str(slurm_cluster.conf)})
    yield server
    server.close()


@pytest.mark.parametrize("resource", ["local", "login", "box", "hpc"])
def test_a_job_reads_nothing_of_the_server_relay_or_another_user(
        every_kind: ServerProcess, resource: str, tmp_path: Path) -> None:
    data = every_kind.data_dir
    wait_for((data / "relay" / "relay.sqlite").exists, what="the embedded relay's state")
    bobs = tmp_path / "bobs.txt"
    bobs.write_text("bob's")
    every_kind.client("bob").upload(bobs)
    with sqlite3.connect(data / "everest.sqlite3") as db:
        bobs_file = db.execute("SELECT path FROM files WHERE owner='bob'").fetchone()[0]
    targets = [str(p) for p in (data / "everest.sqlite3", data, data / "files", bobs_file,
                                data / "relay" / "relay.sqlite",
                                data / "relay" / "runner_secret",
                                data / "relay" / "state_key")]
    alice = every_kind.client("alice")
    job = alice.wait(alice.submit("peek", {"paths": [*targets, "peek.py"]},
                                  resources=[resource]).id, timeout=180)
    assert job.state.value == "DONE", (job, alice.log(job.id))
    report = dict(reversed(line.split(" ", 1)) for line in job.output("report").splitlines())
    assert report.pop("peek.py") == "READ"  # it runs and reads its own folder
    assert job.output("uid") != 0
    assert "READ" not in report.values(), report
    assert set(report) == set(targets)
