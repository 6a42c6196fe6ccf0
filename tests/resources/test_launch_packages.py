"""``launch --packages ./local.whl -r requirements.txt`` on a remote resource (an SSH host):
the local files cannot be read there by path, so they travel as the job's file inputs
(uploaded, staged with the task's folder over SFTP) and the kernel imports them."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness.processes import child_env, cli_command
from tests.resources import kit
from tests.session.helpers import run_in_kernel, split_url, tiny_wheel, wait_for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def ssh_server(sshd_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("launch-packages")
    resources = kit.write_resources(root / "resources.yaml", [sshd_server.resource("lab")])
    server = kit.serve(root / "data", resources,
                       extra_args_more=["--plugin", "launcher.relay.plugin"])
    relay_json = root / "data" / "relay.json"
    wait_for(relay_json.exists, 60, "the relay to start")
    server.relay_url = json.loads(relay_json.read_text())["url"]
    yield server
    server.close()


def test_local_packages_reach_a_session_on_an_ssh_host(ssh_server, sshd_server, tmp_path):
    home = tmp_path / "home"
    (home / "dist").mkdir(parents=True)
    home.chmod(0o700)
    wheel = tiny_wheel(home)
    other = tiny_wheel(home / "dist", "otherpkg", 7)
    (home / "requirements.txt").write_text(f"dist/{other.name}\n")
    env = child_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"),
                    XDG_DATA_HOME=str(tmp_path / ".local/share"),
                    EVEREST_TOKEN=ssh_server.token_for("alice"))
    done = subprocess.run([*cli_command(), "--everest", ssh_server.url, "--json", "launch",
                           "--relay", ssh_server.relay_url, "--detach", "--timeout", "600",
                           "--resource", "lab", "--packages", wheel.name, "-r",
                           "requirements.txt"], env=env, cwd=home, capture_output=True,
                          text=True, timeout=660)
    assert done.returncode == 0, (done.stderr, ssh_server.log_text())
    out = json.loads(done.stdout)
    client = ssh_server.client()
    try:
        base, token = split_url(out["url"])
        code = ("import os, tinypkg, otherpkg; print(tinypkg.ANSWER, otherpkg.ANSWER, "
                "open(os.path.expanduser('~/.everest-test-marker')).read().strip())")
        seen = run_in_kernel(base, token, code, timeout=120)
    finally:
        client.cancel(out["job_id"])
    assert seen == f"42 7 {sshd_server.marker}\n"  # the packages, on the SSH host
