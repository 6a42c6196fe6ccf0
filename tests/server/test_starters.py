"""Task starters over a real root server with cgroup containment
(:mod:`everest_local.starters`): a task runs in a starter that was ready before it was
submitted, as its user's account, in a cgroup of its own; the starter is replaced; a
cancelled task's whole tree ends; an idle starter cannot be read by another process of
its account; idle starters die with a server killed with ``kill -9`` and their cgroups are
gone after the restart, while a task running through it lives on and ends cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from everest_app.states import JobState
from everest_local import processes
from everest_local.containment import _cgroup2_mount
from everest_local.task_users import account_for
from tests.fixtures.cgroups import require_cgroup_v2
from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess, start_server, wait_for_state
from tests.server.test_task_ends import _comm, _leftovers, job_processes

HERE = Path(__file__).parent
APPS = [HERE / "starter_apps" / "whoami", HERE / "leftover_apps" / "leaves"]
READY = 2  # the server's slots: as many starters are kept ready per account

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="starts tasks as other accounts, reads their /proc")


@pytest.fixture(scope="module")
def server(real_components: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("starters")
    require_cgroup_v2(tmp)
    srv = start_server(tmp / "data", apps=APPS, slots=READY, kill_grace=0.5,
                       extra_args=["--task-containment", "cgroup"])
    yield srv
    srv.close()


def _account(user: str) -> pwd.struct_passwd:
    return pwd.getpwnam(account_for(user))


def _base(server: ServerProcess) -> Path:
    """The cgroup the server's tasks' cgroups are made in."""
    tasks = json.loads((server.data_dir / "server.json").read_text())["tasks"]
    own = Path(f"/proc/{server.proc.pid}/cgroup").read_text().split("0::", 1)[1].split()[0]
    name = "everest-" + hashlib.sha256(tasks.encode()).hexdigest()[:12]
    return _cgroup2_mount() / own.lstrip("/") / name


def _starters(server: ServerProcess, uid: int) -> dict[str, int]:
    """Starter cgroup -> the pid of the idle starter of account ``uid`` in it."""
    found = {}
    for entry in _base(server).glob(".s-*"):
        try:
            pids = [int(p) for p in (entry / "cgroup.procs").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    found[entry.name] = pid
            except OSError:
                pass
    return found


def _ready(server: ServerProcess, uid: int) -> dict[str, int]:
    return wait_for(lambda: (lambda s: s if len(s) >= READY else None)(_starters(server, uid)),
                    what="the account's starters to be ready")


def test_a_task_runs_in_a_ready_starter_as_its_user_in_a_cgroup_of_its_own(
        server: ServerProcess) -> None:
    client = server.client("alice")
    uid = _account("alice").pw_uid
    first = client.wait(client.submit("whoami", {}).id, timeout=60)
    assert first.state == JobState.DONE, first.raw
    before = _ready(server, uid)
    job = client.wait(client.submit("whoami", {}).id, timeout=60)
    assert job.state == JobState.DONE, job.raw
    assert job.result["uid"] == uid != 0
    cgroup = job.result["cgroup"].strip()
    used = cgroup.rsplit("/", 1)[1]
    assert used in before  # the task's own cgroup: a starter's, made before it was submitted
    assert cgroup.rsplit("/", 2)[1] == _base(server).name
    wait_for(lambda: not (_base(server) / used).exists(), what="the task's cgroup released")
    after = _ready(server, uid)
    assert used not in after and set(after) - set(before)  # replaced by a new starter


def test_a_cancelled_task_leaves_nothing_running(server: ServerProcess) -> None:
    client = server.client("alice")
    uid = _account("alice").pw_uid
    _ready(server, uid)
    job_id = client.submit("leaves", {"end": "wait"}).id
    wait_for_state(client, job_id, "RUNNING")
    procs = _leftovers(job_id)
    task_cgroup = Path(f"/proc/{next(iter(procs))}/cgroup").read_text().split("0::")[1].strip()
    assert task_cgroup.rsplit("/", 1)[1].startswith(".s-")  # started by a starter
    assert all(os.stat(f"/proc/{pid}").st_uid == uid for pid in procs)
    client.cancel(job_id)
    job = client.wait(job_id, timeout=60)
    assert job.state == JobState.CANCELLED, job.raw
    assert job_processes(job_id) == {}
    assert not (_base(server) / task_cgroup.rsplit("/", 1)[1]).exists()


def test_an_idle_starter_is_closed_to_its_own_account(server: ServerProcess) -> None:
    """Another process of the account (a task) can neither read an idle starter's
    memory or descriptors (it is not dumpable) nor trace it."""
    account = _account("alice")
    pid = next(iter(_ready(server, account.pw_uid).values()))
    setpriv = shutil.which("setpriv")
    assert setpriv
    as_account = [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                  "--clear-groups", "--"]
    for path in (f"/proc/{pid}/environ", f"/proc/{pid}/mem", f"/proc/{pid}/fd/0"):
        tried = subprocess.run([*as_account, "cat", path], capture_output=True, timeout=30)
        assert tried.returncode != 0 and b"Permission denied" in tried.stderr, path
    assert processes.is_alive(pid, None)


def test_idle_starters_die_with_a_killed_server_and_a_running_task_does_not(
        server: ServerProcess) -> None:
    client = server.client("alice")
    uid = _account("alice").pw_uid
    _ready(server, uid)
    job_id = client.submit("leaves", {"end": "wait"}).id
    wait_for_state(client, job_id, "RUNNING")
    procs = _leftovers(job_id)
    idle = _ready(server, uid)
    task_cgroup = Path(f"/proc/{next(iter(procs))}/cgroup").read_text().split("/")[-1].strip()
    idle.pop(task_cgroup, None)
    starts = {pid: processes.start_time(pid) for pid in idle.values()}
    server.kill9()
    wait_for(lambda: not any(processes.is_alive(pid, start) for pid, start in starts.items()),
             what="the idle starters to end with the server")
    sleeps = [pid for pid in procs if _comm(pid) == "sleep"]
    assert len(sleeps) >= 2 and all(processes.is_alive(pid, None) for pid in sleeps)  # lives on
    server.restart()
    wait_for(lambda: not any((_base(server) / name).exists() for name in idle),
             what="the idle starters' cgroups removed at the restart")
    assert (_base(server) / task_cgroup).is_dir()  # not the task's
    wait_for(lambda: "re-adopted" in client.log(job_id), what="the re-adoption")
    client.cancel(job_id)
    job = client.wait(job_id, timeout=60)
    assert job.state == JobState.CANCELLED, job.raw
    assert job_processes(job_id) == {}
    assert not (_base(server) / task_cgroup).exists()


def test_tasks_still_start_when_the_forker_is_gone(server: ServerProcess) -> None:
    """Kill the server's forker: tasks start the slower way (a cgroup made for the task)
    and still run as their account; no job fails for it."""
    client = server.client("alice")
    uid = _account("alice").pw_uid
    assert client.wait(client.submit("whoami", {}).id, timeout=60).state == JobState.DONE
    _ready(server, uid)
    forkers = [pid for pid in _children(server.proc.pid)
               if b"RECORDS" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(forkers) == 1
    os.kill(forkers[0], signal.SIGKILL)
    for _ in range(3):
        job = client.wait(client.submit("whoami", {}).id, timeout=60)
        assert job.state == JobState.DONE, job.raw
        assert job.result["uid"] == uid
        assert job.result["cgroup"].strip().rsplit("/", 1)[1] == f"{job.id}-0-0"


def _children(parent: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == parent:
                found.append(int(name))
    return found


def test_a_stopped_server_leaves_no_starter_nor_cgroup(
        real_components: None, tmp_path: Path) -> None:
    require_cgroup_v2(tmp_path)
    srv = start_server(tmp_path / "data", apps=APPS, slots=READY,
                       extra_args=["--task-containment", "cgroup"])
    try:
        client = srv.client("alice")
        uid = _account("alice").pw_uid
        assert client.wait(client.submit("whoami", {}).id, timeout=60).state == JobState.DONE
        idle = _ready(srv, uid)
        base = _base(srv)
        starts = {pid: processes.start_time(pid) for pid in idle.values()}
        assert srv.stop() == 0
    finally:
        srv.close()
    assert not any(processes.is_alive(pid, start) for pid, start in starts.items())
    assert not base.exists()  # every starter's cgroup removed, then the server's own
    assert not (Path("/run/everest-jupyter") / base.name).exists()
