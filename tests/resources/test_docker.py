"""Tasks in Docker containers, on a private dockerd started for the test session."""

from __future__ import annotations

import re
from socket import gethostname

import pytest

from tests.resources import kit

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def docker_server(real_components: None, docker_engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("docker-server")
    resources = kit.write_resources(root / "resources.yaml", [
        {"name": "box", "kind": "docker", "image": docker_engine.base_image,
         "docker_host": docker_engine.host, "memory": "256m", "cpus": 1, "uid": "65534"},
    ])
    server = kit.serve(root / "data", resources)
    server.resources_file = resources
    yield server
    server.close()


def test_job_runs_in_a_container_as_nobody(docker_server):
    report = kit.check_roundtrip(docker_server, "box")
    assert report["uid"] == 65534
    # docker names the container's host after the container id
    assert re.fullmatch(r"[0-9a-f]{12}", report["host"]) and report["host"] != gethostname()


def test_cancel_stops_the_container_which_has_limits_and_no_privileges(docker_server,
                                                                        docker_engine):
    seen = {}

    def inspect(job_id):
        [container] = docker_engine.client().containers.list(
            filters={"label": "everest.task"})
        host = container.attrs["HostConfig"]
        seen.update(memory=host["Memory"], cpus=host["NanoCpus"], caps=host["CapDrop"],
                    network=host["NetworkMode"], user=container.attrs["Config"]["User"],
                    security=host["SecurityOpt"], job=job_id, name=container.name)

    log = kit.check_cancel(docker_server, "box", docker_server.data_dir / "tasks", inspect)
    assert seen["memory"] == 256 << 20 and seen["cpus"] == 10**9
    assert seen["caps"] == ["ALL"] and seen["network"] == "none"
    assert seen["user"] == "65534:65534" and "no-new-privileges" in seen["security"]
    assert f"container {seen['name']}" in log
    assert docker_engine.client().containers.list(all=True) == []


def test_time_limit_stops_the_container(docker_server):
    kit.check_time_limit(docker_server, "box")


def test_kill9_restart_readopts_the_container(docker_server):
    report, _ = kit.check_kill9_restart(docker_server, "box", docker_server.data_dir / "tasks")
    assert report["host"] != gethostname()


def test_an_image_the_resource_does_not_allow_fails_the_job(docker_server):
    client = docker_server.client()
    job = client.submit("probe", {"text": "x", "image": "evil/miner:1"}, resources=["box"])
    failed = client.wait(job.id, timeout=60)
    assert failed.state.value == "FAILED"
    assert "image 'evil/miner:1' is not allowed on box" in failed.info, failed.info


def test_links_in_the_mounted_work_folder_are_not_followed(docker_server, tmp_path):
    kit.check_links_not_followed(docker_server, "box", tmp_path)
