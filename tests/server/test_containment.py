"""Every process a task starts ends with it, in both kinds of container (cgroup v2 and the
subreaper fallback): a ``setsid`` daemon and a double-forked ``nohup sleep`` included,
whether the task exits 0, fails, is interrupted or killed. Real processes, no server (the
server-level tests are in tests/server/test_task_ends.py)."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from everest_local import processes
from everest_local.containment import (
    CgroupContainment,
    Containment,
    ContainmentKind,
    SubreaperContainment,
    open_containment,
)
from everest_local.task_users import TaskUser
from tests.fixtures.cgroups import require_cgroup_v2
from tests.fixtures.loops import on_own_thread
from tests.fixtures.task_accounts import ensure_account, ensure_passable
from tests.fixtures.waiting import wait_for

# leaves a setsid daemon and a double-forked nohup sleep, records their pids, then ends as
# told: "exit N", or "wait" (sleeps until signalled)
LEAVER = ("setsid -f sh -c 'echo $$ > daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1; "
          "( nohup sh -c 'echo $$ > nohup.pid; exec sleep 300' >/dev/null 2>&1 & ); "
          "while [ ! -s daemon.pid ] || [ ! -s nohup.pid ]; do sleep 0.01; done; "
          'if [ "$1" = wait ]; then exec sleep 300; fi; exit "$1"')



KINDS = [ContainmentKind.CGROUP, ContainmentKind.SUBREAPER]


@pytest.fixture(params=KINDS, ids=[k.value for k in KINDS])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Containment]:
    if request.param is ContainmentKind.CGROUP:
        require_cgroup_v2(tmp_path)
    made = open_containment(request.param.value, tmp_path / "tasks")
    assert made.kind is request.param
    yield made
    made.close()


class Task:
    def __init__(self, container: Containment, root: Path, name: str, end: str,
                 user: TaskUser | None = None):
        self.container = container
        self.dir = root / name
        self.work = self.dir / "work"
        self.work.mkdir(parents=True)
        self.spawned = processes.spawn(["/bin/sh", "-c", LEAVER, "sh", end], self.work,
                                       self.dir, dict(os.environ), user, container)
        wait_for(lambda: (self.work / "nohup.pid").exists() and
                 (self.work / "daemon.pid").exists(), what="the task's leftovers")
        self.left = [int(wait_for(lambda p=p: _pid_in(self.work / p), what=p))
                     for p in ("daemon.pid", "nohup.pid")]
        self.starts = [processes.start_time(pid) for pid in self.left]

    def alive(self) -> list[int]:
        return [pid for pid, start in zip(self.left, self.starts, strict=True)
                if processes.is_alive(pid, start)]

    def ended(self) -> int:
        """What the executor does when a task ends: wait for the child, end the container."""
        code = self.spawned.popen.wait()
        self.container.end(self.dir.name)
        return code


def _pid_in(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else None


@pytest.mark.parametrize("code", [0, 3])
def test_done_or_failed_leaves_nothing_running(container: Containment, tmp_path: Path,
                                              code: int) -> None:
    task = Task(container, tmp_path, f"job{code}-0-0", str(code))
    assert task.ended() == code
    assert processes.read_exit_status(task.dir) == code
    assert task.alive() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_task_leaves_nothing_running(container: Containment, tmp_path: Path,
                                               sig: int) -> None:
    task = Task(container, tmp_path, f"job{sig}-0-0", "wait")
    assert len(task.alive()) == 2  # the leftovers run while the task does
    assert processes.signal_group(task.spawned.pid, sig, task.spawned.start_time)
    assert task.ended() in (-sig, 128 + sig)
    assert task.alive() == []


def test_cgroup_kind_holds_every_process_of_the_task(tmp_path: Path) -> None:
    require_cgroup_v2(tmp_path)
    container = open_containment("cgroup", tmp_path / "tasks")
    assert isinstance(container, CgroupContainment)
    task = Task(container, tmp_path, "held-0-0", "wait")
    procs = (container.base / "held-0-0" / "cgroup.procs").read_text().split()
    assert {task.spawned.pid, *task.left} <= set(map(int, procs))
    processes.signal_group(task.spawned.pid, signal.SIGTERM, task.spawned.start_time)
    task.ended()
    assert not (container.base / "held-0-0").exists()  # released
    container.close()
    assert not container.base.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a task as another account needs root")
def test_a_task_account_cannot_kill_its_reaper_or_escape(tmp_path: Path) -> None:
    ensure_account("everest-task-a")
    ensure_passable(tmp_path)
    entry = pwd.getpwnam("everest-task-a")
    user = TaskUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    container = SubreaperContainment()
    task = Task(container, tmp_path, "acct-0-0", "wait", user)
    assert all(os.stat(f"/proc/{pid}").st_uid == user.uid for pid in task.left)
    reaper = task.spawned.popen.pid
    assert os.stat(f"/proc/{reaper}").st_uid == 0  # the task cannot signal it
    processes.signal_group(task.spawned.pid, signal.SIGINT, task.spawned.start_time)
    task.ended()
    assert task.alive() == []


def test_cgroup_is_refused_by_name_where_it_cannot_work(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("everest_local.containment._cgroup2_mount",
                        lambda: (_ for _ in ()).throw(OSError("no cgroup2 file system")))
    with pytest.raises(ValueError, match="no cgroup2 file system.*subreaper"):
        open_containment("cgroup", tmp_path)
    assert open_containment("auto", tmp_path).kind is ContainmentKind.SUBREAPER


@pytest.mark.skipif(os.geteuid() != 0, reason="starters of another account need root")
def test_idle_starters_of_an_unused_account_are_retired(tmp_path: Path) -> None:
    """An account's ready starters (everest_local/starters.py) end once it has had no
    task for ``retire_after`` seconds, their cgroups with them; the next task of it asks
    for new ones."""
    require_cgroup_v2(tmp_path)
    ensure_account("everest-task-a")
    entry = pwd.getpwnam("everest-task-a")
    container = open_containment("cgroup", tmp_path / "tasks", ready=2)
    assert isinstance(container, CgroupContainment) and container.starters is not None
    starters = container.starters
    def drive() -> None:  # on a thread of its own: a browser test's loop may run on this one
        loop = asyncio.new_event_loop()
        try:
            check(loop)
        finally:
            container.close()
            loop.close()

    def check(loop: asyncio.AbstractEventLoop) -> None:
        container.listen(loop, lambda pid, code: None)
        account = (entry.pw_uid, entry.pw_gid)

        def ready() -> list:
            loop.run_until_complete(asyncio.sleep(0.01))  # the reports are read on the loop
            return list(starters._pool.get(account, ()))

        assert container.take_starter(*account) is None  # none yet: it asks for them
        idle = wait_for(lambda: (lambda s: s if len(s) == 2 else None)(ready()),
                        what="two ready starters")
        assert all(os.stat(f"/proc/{s.pid}").st_uid == entry.pw_uid for s in idle)
        starters.retire_after = 0
        container.tidy()
        assert ready() == []
        wait_for(lambda: ready() == [] and not any(
            (container.base / s.cgroup).exists() or processes.is_alive(s.pid, s.pstart)
            for s in idle), what="the retired starters and their cgroups gone")
        assert container.take_starter(*account) is None  # asks again
        wait_for(lambda: len(ready()) == 2, what="new starters")

    on_own_thread(drive)
    assert not container.base.exists()
