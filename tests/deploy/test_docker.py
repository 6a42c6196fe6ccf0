"""deploy/docker: the images build against a locally made base in a Docker engine the tests
start (no registry is reachable here), and the compose stack — hub, relay, local Everest
server — comes up: a user of the Everest server signs in to the hub over HTTP, spawns a
server (an Everest job, reached through the relay) and runs code in a kernel through it;
``compose down`` leaves no container running and the volumes in place."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.processes import free_port
from tests.session.helpers import run_in_kernel, wait_for

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker" / "compose.yaml"
PASSWORD = "alice-password-123"


def clean_context(folder: Path) -> Path:
    """The repository's tracked files (what a fresh clone has), as a build context."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = REPO / name, folder / name
        if source.is_symlink() or source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return folder


# loading (or building) a 1.5 GB image on a busy machine takes minutes
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def image(docker_engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The everest-jupyter image (hub, relay, server), built FROM the local base; removed
    from the engine afterwards (it stays cached as a file), so the engine's own teardown
    has little to delete."""
    context = clean_context(tmp_path_factory.mktemp("context"))
    tag = docker_engine.build("everest-jupyter:test", context, "deploy/docker/Dockerfile",
                              {"BASE": docker_engine.base_image})
    try:
        yield tag
    finally:
        docker_engine.client().images.remove(tag, force=True)


def test_the_session_image_has_what_the_runner_needs(docker_engine) -> None:
    tag = docker_engine.session_image
    runner = REPO / "agent_scripts"
    out = docker_engine.client().containers.run(
        tag, ["python3", "-c", "import sys; sys.path.insert(0, '/runner'); "
              "import runner_bootstrap, runner_openssh; "
              "print(runner_bootstrap.missing_modules(), bool(runner_openssh.find_ssh()))"],
        volumes={str(runner): {"bind": "/runner", "mode": "ro"}}, user="65534:65534",
        network_mode="none", remove=True)
    assert out.decode().split() == ["[]", "True"]  # no bootstrap; OpenSSH for the tunnel


@pytest.fixture
def stack(real_components: None,
          image: str, docker_engine) -> Iterator[tuple[list[str], dict[str, str]]]:
    """``docker-compose`` for a project of this test's own, on free ports."""
    project = "ej" + secrets.token_hex(4)
    env = {**docker_engine.env(), "EVEREST_JUPYTER_IMAGE": image,
           "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32), "HUB_ID": "composetest"}
    for name in ("HUB_PORT", "HUB_API_PORT", "PROXY_API_PORT", "RELAY_PORT",
                 "RELAY_SSH_PORT", "EVEREST_PORT"):
        env[name] = str(free_port())
    compose = ["docker-compose", "-f", str(COMPOSE), "-p", project]
    try:
        yield compose, env
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "20"], env=env,
                       capture_output=True, timeout=300)


def _compose(compose: list[str], env: dict[str, str], *args: str, stdin: str = "") -> str:
    out = subprocess.run([*compose, *args], env=env, input=stdin, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _logs(compose: list[str], env: dict[str, str]) -> str:
    return subprocess.run([*compose, "logs", "--no-color", "--tail", "60"], env=env,
                          capture_output=True, text=True, timeout=120).stdout


def test_compose_up_sign_in_spawn_run_a_kernel_and_down(stack, docker_engine) -> None:
    compose, env = stack
    hub = f"http://127.0.0.1:{env['HUB_PORT']}"
    _compose(compose, env, "up", "-d", "--no-build")
    try:
        def up() -> bool:
            try:
                return requests.get(hub + "/hub/api/", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=120, what="the hub", interval=0.5)
        _compose(compose, env, "exec", "-T", "everest", "everest-jupyter", "server",
                 "add-user", "alice", "--data-dir", "/data", "--password-stdin",
                 stdin=PASSWORD + "\n")

        browser = requests.Session()  # sign in as a person does: the form, its _xsrf
        browser.get(hub + "/hub/login", timeout=30).raise_for_status()
        xsrf = browser.cookies["_xsrf"]
        signed_in = browser.post(hub + "/hub/login", timeout=60, data={
            "username": "alice", "password": PASSWORD, "_xsrf": xsrf})
        # signed in, the hub sends the browser on to spawn her server (no options to pick)
        assert signed_in.status_code == 200, signed_in.text[:2000]
        assert signed_in.url.endswith("/hub/spawn-pending/alice"), signed_in.url
        xsrf = browser.cookies["_xsrf"]  # a new one for the signed-in user
        made = browser.post(hub + "/hub/api/users/alice/tokens", timeout=30,
                            headers={"X-XSRFToken": xsrf}, json={"note": "test"})
        assert made.status_code == 201, made.text
        auth = {"Authorization": f"token {made.json()['token']}"}

        def ready() -> bool:
            user = requests.get(hub + "/hub/api/users/alice", headers=auth, timeout=30).json()
            return bool(user.get("servers", {}).get("", {}).get("ready"))

        wait_for(ready, timeout=240, what="alice's server", interval=1.0)
        assert run_in_kernel(hub + "/user/alice/", made.json()["token"],
                             "import os; print(6*7, os.environ['JUPYTERHUB_USER'])") \
            == "42 alice\n"
    except BaseException:
        print(_logs(compose, env))
        raise

    _compose(compose, env, "down", "--timeout", "20")
    client = docker_engine.client()
    project = compose[compose.index("-p") + 1]
    assert client.containers.list(all=True, filters={
        "label": f"com.docker.compose.project={project}"}) == []
    volumes = {v.name for v in client.volumes.list()}
    assert {f"{project}_{name}" for name in ("everest-data", "relay-state", "hub-data")} \
        <= volumes  # state outlives the containers
