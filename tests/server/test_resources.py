"""Resources: the file's checks, the read-only API, and which resource a job may pick."""

from __future__ import annotations

import pytest
import requests

from everest_app.errors import BadRequestError
from everest_local.resources import Resources, resource_id
from tests.resources import kit

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk0rt7dY6c1L3bX+s7m4h1b2T0m2a0J8C9T8p1zq3cW"


def _load(tmp_path, text):
    path = tmp_path / "resources.yaml"
    path.write_text(text)
    return Resources.load(path)


@pytest.mark.parametrize(("text", "message"), [
    ("resources: [{name: a, kind: cloud}]", "kind must be one of"),
    ("resources: [{name: a, kind: docker}]", "'image' is required"),
    ("resources: [{name: a, kind: docker, image: x, imagee: y}]", "unknown settings"),
    ("resources: [{name: a, kind: docker, image: x, uid: '0'}]", "non-root"),
    ("resources: [{name: a, kind: ssh, host: h, user: u}]", "pin the host key"),
    (f"resources: [{{name: a, kind: ssh, host: h, user: root, host_keys: ['{HOST_KEY}']}}]",
     "not run as root"),
    ("resources: [{name: a, kind: slurm}]", "'workdir'"),
    ("resources: [{name: a, kind: slurm, workdir: /w, partition: 'x; rm'}]", "plain word"),
    ("resources: [{name: a, kind: local}, {name: a, kind: local}]", "unique"),
    ("pools: [{name: p, resources: [nothing]}]", "no resource 'nothing'"),
    ("apps: {probe: [nowhere]}", "unknown resource 'nowhere'"),
    ("resources: [{name: 'a b', kind: local}]", "a name of letters"),
    ("resources: [{name: a, kind: local, id: 'xyz'}]", "24 lowercase hex"),
    ("nodes: []", "unknown top-level keys"),
    ("resources: [", "not valid YAML"),
])
def test_bad_resource_files_are_refused_saying_why(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, text)


def test_choice_among_resources_pools_and_bindings(tmp_path):
    res = _load(tmp_path, """
resources:
  - {name: a, kind: docker, image: x}
  - {name: b, kind: docker, image: x, users: [alice]}
  - {name: c, kind: slurm, workdir: /shared}
pools:
  - {name: ab, resources: [a, b]}
apps:
  bound: [c, ab]
""")
    assert res.get("a").id == resource_id("resource", "a") and len(res.get("a").id) == 24
    load = {"a": 5, "b": 1, "c": 0, "local": 0}
    pick = lambda user, alias, refs: res.choose(  # noqa: E731
        user, alias, res.check(user, alias, refs), lambda r: load[r.name]).name
    assert pick("alice", "free", None) == "local"  # unbound app, nothing asked: here
    assert pick("alice", "bound", None) == "c"  # bound: its first resource
    assert pick("alice", "bound", ["ab"]) == "b"  # a pool: its least busy member
    assert pick("bob", "bound", ["ab"]) == "a"  # ... that bob may use
    assert pick("alice", "free", [res.get("b").id]) == "b"  # by id
    with pytest.raises(BadRequestError, match="no resource 'b' available to you"):
        res.check("bob", "free", ["b"])
    with pytest.raises(BadRequestError, match="'local' may not run application 'bound'"):
        res.check("alice", "bound", ["local"])
    with pytest.raises(BadRequestError, match="no resource 'zzz'"):
        res.check("alice", "free", ["zzz"])
    only_b = _load(tmp_path, "resources: [{name: b, kind: docker, image: x, users: [alice]}]\n"
                             "apps: {solo: [b]}")
    with pytest.raises(BadRequestError, match="no resource you may use runs application 'solo'"):
        only_b.check("bob", "solo", None)


@pytest.fixture(scope="module")
def server(real_components: None, tmp_path_factory):
    root = tmp_path_factory.mktemp("resources-api")
    path = kit.write_resources(root / "resources.yaml", [
        {"name": "box", "kind": "docker", "image": "local/none:1", "users": ["alice"],
         "description": "a container"},
        {"name": "login", "kind": "ssh", "host": "192.0.2.1", "user": "u",
         "host_keys": [HOST_KEY], "key": "/secret/key"},
    ], pools=[{"name": "both", "resources": ["box", "login"]}], apps={"probe": ["local"]})
    server = kit.serve(root / "data", path)
    yield server
    server.close()


def test_resources_are_listed_read_only_without_secrets(server):
    headers = {"Authorization": f"Bearer {server.token_for('alice')}"}
    listed = requests.get(f"{server.url}/api/resources", headers=headers, timeout=10).json()
    by_name = {r["name"]: r for r in listed}
    assert set(by_name) == {"local", "box", "login", "both"}
    assert by_name["box"]["type"] == "docker" and by_name["both"]["type"] == "pool"
    assert by_name["both"]["resources"] == [by_name["box"]["id"], by_name["login"]["id"]]
    text = str(listed)
    assert "192.0.2.1" not in text and "/secret/key" not in text
    one = requests.get(f"{server.url}/api/resources/{by_name['login']['id']}",
                       headers=headers, timeout=10)
    assert one.json() == by_name["login"]
    bob = {"Authorization": f"Bearer {server.token_for('bob')}"}
    names = {r["name"] for r in requests.get(f"{server.url}/api/resources", headers=bob,
                                              timeout=10).json()}
    assert "box" not in names
    missing = requests.get(f"{server.url}/api/resources/box", headers=bob, timeout=10)
    assert missing.status_code == 404 and "box" in missing.json()["message"]
    put = requests.put(f"{server.url}/api/resources", headers=headers, json={}, timeout=10)
    assert put.status_code == 405
    assert requests.get(f"{server.url}/api/resources", timeout=10).status_code == 401


def test_a_job_names_its_resource_and_bad_ones_are_400(server):
    client = server.client()
    job = client.submit("probe", {"text": "here"}, resources=["local"])
    done = client.wait(job.id, timeout=60)
    assert done.state.value == "DONE" and kit.report_of(done)["argv"] == ["here"]
    for refs, message in ((["nowhere"], "no resource 'nowhere'"),
                          (["box"], "'box' may not run application 'probe'")):
        with pytest.raises(BadRequestError, match=message):
            client.submit("probe", {"text": "x"}, resources=refs)
    with pytest.raises(BadRequestError, match="no resource 'box' available to you"):
        server.client("bob").submit("probe", {"text": "x"}, resources=["box"])
    headers = {"Authorization": f"Bearer {server.token_for('alice')}"}
    answer = requests.post(f"{server.url}/api/apps/probe", headers=headers,
                           json={"inputs": {"text": "x"}, "resources": [7]}, timeout=10)
    assert answer.status_code == 400 and "7" in answer.json()["message"]
    assert not [j for j in client.jobs() if j.state.value not in ("DONE",)]


def test_a_bad_resources_file_stops_the_server_from_starting(tmp_path):
    from everest_local.cli import main

    path = tmp_path / "r.yaml"
    path.write_text("resources: [{name: a, kind: cloud}]")
    assert main(["--data-dir", str(tmp_path / "d"), "--port", "0",
                 "--resources", str(path)]) == 2
