"""``everest-jupyter launch --resource``: the URL it prints reaches a kernel that runs on
that resource (in a container, on the SSH host, inside a Slurm job), which the kernel shows.

One server hosts the relay (``--plugin launcher.relay.plugin``, as ``everest-jupyter
server`` does) and has one resource of each kind; the runner dials out to the relay from
wherever it runs. On the SSH host and in Slurm the runner bootstraps JupyterLab into a venv
cached in the task user's home (the first run of a machine pays for it); the docker
resource runs the session image (``deploy/docker/session``) with host networking.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness.processes import child_env, cli_command
from tests.resources import kit
from tests.session.helpers import run_in_kernel, split_url

pytestmark = pytest.mark.timeout(900)

EVIDENCE = ("import json, os, socket, sys\n"
            "marker = os.path.expanduser('~/.everest-test-marker')\n"
            "print(json.dumps({'host': socket.gethostname(), 'uid': os.getuid(),"
            " 'slurm': os.environ.get('SLURM_JOB_ID'), 'python': sys.executable,"
            " 'cgroup': open('/proc/self/cgroup').read(),"
            " 'marker': open(marker).read().strip() if os.path.exists(marker) else None}))")


@pytest.fixture(scope="module")
def session_server(docker_engine, sshd_server, slurm_cluster, task_user, task_user_dir,
                   tmp_path_factory):
    root = tmp_path_factory.mktemp("launch-resources")
    resources = kit.every_kind(root / "resources.yaml", docker_engine, sshd_server, task_user,
                               task_user_dir / "launch-slurm")
    server = kit.serve_sessions(root, resources, slurm_cluster.conf)
    server.session_image = docker_engine.session_image
    yield server
    server.close()


def _launch(server, tmp_path, *args: str) -> dict:
    env = child_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"),
                    XDG_DATA_HOME=str(tmp_path / ".local/share"),
                    EVEREST_TOKEN=server.token_for("alice"))
    done = subprocess.run([*cli_command(), "--everest", server.url, "--json", "launch",
                           "--relay", server.relay_url, "--detach", "--timeout", "600",
                           *args], env=env, capture_output=True, text=True, timeout=660)
    assert done.returncode == 0, (done.stderr, server.log_text())
    return json.loads(done.stdout)


@pytest.mark.parametrize("kind", ["docker", "ssh", "slurm"])
def test_launch_on_a_resource_gives_a_kernel_there(session_server, sshd_server, task_user,
                                                   tmp_path, kind):
    args = {"docker": ["--resource", "box", "--image", session_server.session_image],
            "ssh": ["--resource", "lab"], "slurm": ["--resource", "hpc"]}[kind]
    out = _launch(session_server, tmp_path, *args)
    client = session_server.client()
    try:
        base, token = split_url(out["url"])
        seen = json.loads(run_in_kernel(base, token, EVIDENCE, timeout=120))
    finally:
        client.cancel(out["job_id"])
    assert client.wait(out["job_id"], timeout=120).state.value == "CANCELLED"
    if kind == "docker":
        # host networking shares the host's name: the container shows in its cgroup, and
        # the kernel runs the image's own Python
        assert "/docker/" in seen["cgroup"] and seen["python"].startswith("/opt/jupyter/")
        assert seen["uid"] == 65534
    else:
        assert seen["uid"] == task_user.pw_uid
    if kind == "ssh":
        assert seen["marker"] == sshd_server.marker
    if kind == "slurm":
        assert seen["slurm"] and seen["slurm"].isdigit()
