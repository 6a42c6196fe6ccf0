"""When a job ends — DONE, FAILED, cancelled, time limit — nothing its task started is
still running (a ``setsid`` daemon and a double-forked ``nohup sleep`` included) and its
task token is refused with 401; on a server of each containment kind (cgroup v2, and the
subreaper fallback forced with ``--task-containment subreaper``).

The test runs as root, so it finds a job's processes by the ``EVEREST_JOB_ID`` in their
environment (``/proc/<pid>/environ``), and reads the task token there too."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from everest_app.states import JobState
from tests.fixtures.cgroups import require_cgroup_v2
from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess, start_server, wait_for_state

APPS = Path(__file__).parent / "leftover_apps"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reads other accounts' /proc")



@pytest.fixture(scope="module", params=["cgroup", "subreaper"])
def server(real_components: None, request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp(f"ends-{request.param}")
    if request.param == "cgroup":
        require_cgroup_v2(tmp)
    srv = start_server(tmp / "data", apps=[APPS / "leaves", APPS / "leaves-limited"],
                       kill_grace=0.5, extra_args=["--task-containment", request.param])
    yield srv
    srv.close()


def job_processes(job_id: str) -> dict[int, dict[str, str]]:
    """The processes whose environment names job ``job_id``, with that environment."""
    marker = f"EVEREST_JOB_ID={job_id}\0".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if marker in data:
            pairs = (item.partition(b"=") for item in data.split(b"\0") if item)
            found[int(name)] = {k.decode(): v.decode(errors="replace") for k, _, v in pairs}
    return found


def _whoami(server: ServerProcess, token: str) -> int:
    return requests.get(f"{server.url}/api/auth/access_token", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code


def _leftovers(job_id: str) -> dict[int, dict[str, str]]:
    """The job's processes once its daemon and nohup sleep are both running."""
    def both() -> dict[int, dict[str, str]] | None:
        procs = job_processes(job_id)
        sleeps = [pid for pid in procs if _comm(pid) == "sleep"]
        return procs if len(sleeps) >= 2 else None
    return wait_for(both, what=f"job {job_id}'s leftover processes")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


ENDS = {"done": ("leaves", {"end": "0"}, JobState.DONE),
        "failed": ("leaves", {"end": "3"}, JobState.FAILED),
        "cancelled": ("leaves", {"end": "wait"}, JobState.CANCELLED),
        "time limit": ("leaves-limited", {}, JobState.FAILED)}


@pytest.mark.parametrize("end", list(ENDS))
def test_nothing_a_task_started_outlives_its_job_nor_does_its_token(
        server: ServerProcess, end: str) -> None:
    app, inputs, state = ENDS[end]
    client = server.client("alice")
    job_id = client.submit(app, inputs).id
    wait_for_state(client, job_id, "RUNNING")
    procs = _leftovers(job_id)
    token = next(iter(procs.values()))["EVEREST_TASK_TOKEN"]
    assert _whoami(server, token) == 200  # the token works while the job runs
    if end in ("done", "failed"):
        work = Path(os.readlink(f"/proc/{next(iter(procs))}/cwd"))
        (work / "go").touch()
    elif end == "cancelled":
        client.cancel(job_id)
    job = client.wait(job_id, timeout=60)
    assert job.state == state, job.raw
    left = {pid: _comm(pid) for pid in job_processes(job_id)}
    assert _whoami(server, token) == 401
    assert left == {}  # already gone when the end is reported



@pytest.mark.parametrize("ends", ["while the server is down", "after the restart"])
def test_what_a_task_left_ends_with_it_across_a_server_kill_9(server: ServerProcess,
                                                              ends: str) -> None:
    client = server.client("alice")
    job_id = client.submit("leaves", {"end": "0"}).id
    wait_for_state(client, job_id, "RUNNING")
    procs = _leftovers(job_id)
    work = Path(os.readlink(f"/proc/{next(iter(procs))}/cwd"))
    server.kill9()
    if ends == "while the server is down":
        (work / "go").touch()
        wait_for((work.parent / "exit").exists, what="the task's exit status")
    server.restart()
    if ends == "after the restart":  # the task is re-adopted, not the server's child
        wait_for(lambda: "re-adopted" in client.log(job_id), what="the re-adoption")
        (work / "go").touch()
    job = client.wait(job_id, timeout=60)
    assert job.state == JobState.DONE, job.raw
    assert {pid: _comm(pid) for pid in job_processes(job_id)} == {}
