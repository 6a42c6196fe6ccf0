"""The word-frequency example with its maps on two resources at once (Slurm and an SSH
host) and its reduces here: the same result, byte for byte, as the run on one resource."""

from __future__ import annotations

import pytest

from tests.orchestrator.test_examples import execute
from tests.resources import kit

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def two_resource_server(real_components: None, slurm_cluster, sshd_server, task_user, task_user_dir,
                        tmp_path_factory):
    root = tmp_path_factory.mktemp("wordcount-server")
    resources = kit.write_resources(root / "resources.yaml", [
        {"name": "hpc", "kind": "slurm", "run_as": task_user.pw_name, "poll_interval": 0.2,
         "workdir": str(task_user_dir / "wordcount-slurm")},
        sshd_server.resource("lab"),
    ])
    server = kit.serve(root / "data", resources, env={"SLURM_CONF": str(slurm_cluster.conf)})
    yield server
    server.close()


def test_maps_on_slurm_and_ssh_reduce_here_same_result(two_resource_server, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("EVEREST_URL", two_resource_server.url)
    monkeypatch.setenv("EVEREST_TOKEN", two_resource_server.token)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    execute("wordcount.ipynb", tmp_path / "one")
    notebook = execute("wordcount.ipynb", tmp_path / "two", 'MAP_RESOURCES = ["hpc", "lab"]\n')
    assert "OK: " in "".join(o.get("text", "") for c in notebook.cells
                             if c.cell_type == "code" for o in c.get("outputs", []))
    one = sorted((tmp_path / "one" / "results").glob("part-*.txt"))
    two = sorted((tmp_path / "two" / "results").glob("part-*.txt"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 4
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    client = two_resource_server.client()
    where = {}
    for job in client.jobs():
        log = client.log(job.id)
        for name in ("hpc", "lab", "local"):
            if f"started on {name} " in log:
                where.setdefault(job.name.split()[0], set()).add(name)
    # the first run: everything here; the second: maps on both, reduces here
    assert where == {"map": {"local", "hpc", "lab"}, "reduce": {"local"}}, where
