"""Everest kernels on Docker, SSH and Slurm resources, in one real JupyterLab: each kernel
shows its resource's evidence (the container's cgroup and uid, the SSH host's marker, a
``SLURM_JOB_ID``), interrupts a busy loop, restarts in the same job and, shut down, leaves
no job running; two kernels of one lab on two resources run at once.

The runner dials out to the relay from wherever it runs (as a resource behind NAT would);
on the SSH host and in Slurm it bootstraps ipykernel into a venv cached in the task user's
home (the first run on a machine pays for it); the docker resource runs the session image
(``deploy/docker/session``) with host networking.
"""

from __future__ import annotations

import json

import pytest

from tests.kernels.conftest import running_jobs, serve_with_relay
from tests.kernels.lab import EVIDENCE
from tests.resources import kit
from tests.session.helpers import wait_for

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def resource_server(docker_engine, sshd_server, slurm_cluster, task_user, task_user_dir,
                    tmp_path_factory):
    root = tmp_path_factory.mktemp("kernel-resources")
    resources = kit.every_kind(root / "resources.yaml", docker_engine, sshd_server, task_user,
                               task_user_dir / "kernels-slurm")
    server = serve_with_relay(root / "data", ["--resources", str(resources)],
                              env={"SLURM_CONF": str(slurm_cluster.conf)})
    server.session_image = docker_engine.session_image
    yield server
    server.close()


def _install(lab, server, kind: str) -> str:
    args = {"docker": ["--resource", "box", "--image", server.session_image],
            "ssh": ["--resource", "lab"], "slurm": ["--resource", "hpc"],
            "local": ["--resource", "local"]}[kind]
    return lab.install(*args, "--name", f"on-{kind}")


def _check_evidence(seen: dict, kind: str, sshd_server, task_user) -> None:
    if kind == "docker":
        # host networking shares the host's name: the container shows in its cgroup, and
        # the kernel runs the image's own Python as the image's unprivileged user
        assert "/docker/" in seen["cgroup"] and seen["python"].startswith("/opt/jupyter/")
        assert seen["uid"] == 65534
    else:
        assert seen["uid"] == task_user.pw_uid
    if kind == "ssh":
        assert seen["marker"] == sshd_server.marker
    if kind == "slurm":
        assert seen["slurm"] and seen["slurm"].isdigit()


@pytest.mark.parametrize("kind", ["docker", "ssh", "slurm"])
def test_a_kernel_on_a_resource(resource_server, make_lab, sshd_server, task_user,
                                kind) -> None:
    lab = make_lab(resource_server)
    name = _install(lab, resource_server, kind)
    lab.start()
    kernel = lab.start_kernel(name)
    first = json.loads(kernel.run(EVIDENCE, timeout=300))
    _check_evidence(first, kind, sshd_server, task_user)
    [job_id] = running_jobs(resource_server)

    busy = kernel.send("while True: pass")
    kernel.wait_busy(busy)
    kernel.interrupt()
    stopped = kernel.result(busy, timeout=60)
    assert (stopped["status"], stopped["ename"]) == ("error", "KeyboardInterrupt")

    kernel.restart()
    kernel.reconnect()
    again = json.loads(kernel.run(EVIDENCE))
    assert again["pid"] != first["pid"]
    assert running_jobs(resource_server) == [job_id]  # restarted in the same job

    kernel.shutdown()
    wait_for(lambda: not running_jobs(resource_server), 120, "the kernel's job to end")


def test_two_kernels_of_one_lab_on_two_resources_at_once(resource_server, make_lab,
                                                         sshd_server, task_user) -> None:
    lab = make_lab(resource_server)
    names = {kind: _install(lab, resource_server, kind) for kind in ("local", "docker")}
    lab.start()
    kernels = {kind: lab.start_kernel(name) for kind, name in names.items()}
    assert len(running_jobs(resource_server)) == 2
    # both busy at once: each computes while the other does
    sent = {kind: k.send("import time; time.sleep(2); " + EVIDENCE.replace("\n", "; "))
            for kind, k in kernels.items()}
    seen = {kind: json.loads(kernels[kind].result(sent[kind], 300)["stdout"])
            for kind in kernels}
    _check_evidence(seen["docker"], "docker", sshd_server, task_user)
    assert "/docker/" not in seen["local"]["cgroup"]
    assert seen["local"]["host"] != seen["docker"]["host"] or \
        seen["local"]["uid"] != seen["docker"]["uid"]
    for kernel in kernels.values():
        kernel.shutdown()
    wait_for(lambda: not running_jobs(resource_server), 120, "both kernels' jobs to end")
