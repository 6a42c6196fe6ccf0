"""Tasks as Slurm batch jobs on a real one-node cluster (slurmctld, slurmd, munge)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from everest_local.backends import TaskSpec
from everest_local.backends.slurm import SlurmBackend
from everest_local.resources import Resource
from tests.fixtures.sshd import running_sshd
from tests.resources import kit

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def slurm_server(real_components: None, slurm_cluster, task_user, task_user_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-server")
    resources = kit.write_resources(root / "resources.yaml", [
        {"name": "hpc", "kind": "slurm", "partition": "debug", "run_as": task_user.pw_name,
         "workdir": str(task_user_dir / "slurm-tasks"), "poll_interval": 0.2},
    ])
    server = kit.serve(root / "data", resources, env={"SLURM_CONF": str(slurm_cluster.conf)})
    server.tasks_at = task_user_dir / "slurm-tasks"
    yield server
    server.close()


def test_job_runs_as_a_slurm_job_of_the_task_user(slurm_server, task_user):
    report = kit.check_roundtrip(slurm_server, "hpc")
    assert report["slurm_job_id"] and report["slurm_job_id"].isdigit()
    assert report["uid"] == task_user.pw_uid


def test_pending_jobs_are_scheduled_with_slurms_reason_and_cancel_works(slurm_server,
                                                                          slurm_cluster):
    client = slurm_server.client()
    jobs = [client.submit("probe", {"text": f"fill {i}", "seconds": 300}, resources=["hpc"])
            for i in range(4)]  # one CPU each, two CPUs: two run, two wait
    # they reach Slurm in whatever order their staging ends: look at all four
    seen = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sorted(seen.values()) != [
            "RUNNING", "RUNNING", "SCHEDULED queued: Priority", "SCHEDULED queued: Resources"]:
        for job in jobs:
            now = client.job(job.id)
            seen[job.id] = f"{now.state.value} {now.info}" if now.info else now.state.value
        time.sleep(0.1)
    assert sorted(seen.values()) == ["RUNNING", "RUNNING", "SCHEDULED queued: Priority",
                                     "SCHEDULED queued: Resources"], seen
    for job in jobs:
        client.cancel(job.id)
    for job in jobs:
        assert client.wait(job.id, timeout=60).state.value == "CANCELLED"
    queue = slurm_cluster.run(["squeue", "-h", "-o", "%i %T"]).stdout.split("\n")
    assert not [line for line in queue if line.strip() and "COMPLET" not in line], queue


def test_cancel_interrupts_the_running_batch_job(slurm_server):
    kit.check_cancel(slurm_server, "hpc", slurm_server.tasks_at)


def test_time_limit_is_enforced_by_the_server(slurm_server):
    # Slurm's own limit has minute granularity and a 30 s tick (a TIMEOUT costs 60-90 s);
    # the server stops the task at the app's limit and passes whole minutes to Slurm
    kit.check_time_limit(slurm_server, "hpc")


def test_links_in_what_comes_back_are_not_followed(slurm_server, tmp_path):
    kit.check_links_not_followed(slurm_server, "hpc", tmp_path)


def test_kill9_restart_readopts_the_slurm_job(slurm_server):
    report, log = kit.check_kill9_restart(slurm_server, "hpc", slurm_server.tasks_at)
    assert f"job_id {report['slurm_job_id']}" in log


@pytest.fixture(scope="module")
def login_node(slurm_cluster, task_user, task_user_dir):
    """An sshd whose sessions see the cluster (SLURM_CONF): a login node."""
    with running_sshd(task_user, task_user_dir,
                      set_env={"SLURM_CONF": str(slurm_cluster.conf)}) as node:
        yield node


def test_jobs_go_through_a_login_node_over_ssh(login_node, task_user, task_user_dir,
                                               tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-login-server")
    tasks_at = task_user_dir / "slurm-login-tasks"
    resources = kit.write_resources(root / "resources.yaml", [
        {"name": "remote-hpc", "kind": "slurm", "login": login_node.login(),
         "workdir": str(tasks_at), "poll_interval": 0.2},
    ])
    server = kit.serve(root / "data", resources)  # no SLURM_CONF here: only on the login
    try:
        report = kit.check_roundtrip(server, "remote-hpc")
        assert report["slurm_job_id"] and report["uid"] == task_user.pw_uid
        assert report["marker"] == login_node.marker
        kit.check_cancel(server, "remote-hpc", tasks_at)
    finally:
        server.close()


def test_sbatch_options_come_from_requirements_and_the_resource(tmp_path):
    resource = Resource("c", "slurm", "0" * 24, options={
        "partition": "long", "account": "proj", "qos": "high", "max_time": 600,
        "workdir": "/shared"})
    spec = TaskSpec("t-0-0", Path(tmp_path), ["x"], {}, time_limit=3601, requirements={
        "nodes": {"defaultValue": 2}, "coresPerNode": {"defaultValue": 4},
        "memoryPerCore": {"defaultValue": 512}, "timeLimit": {"defaultValue": 3601}})
    backend = SlurmBackend(resource)
    argv = backend.sbatch_argv(spec, backend.handle_for(spec))
    assert argv == ["sbatch", "--parsable", "--job-name=everest-t-0-0",
                    "--chdir=/shared/t-0-0/work", "--output=stdout", "--error=stderr",
                    "--export=NONE", "--partition=long", "--account=proj", "--qos=high",
                    "--nodes=2", "--cpus-per-task=4", "--mem-per-cpu=512M", "--time=10",
                    "/shared/t-0-0/job.sh"]
