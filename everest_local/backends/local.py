"""Tasks as processes on this machine (the ``local`` resource), through the same
:class:`~everest_local.backends.base.Backend` contract as every other kind.

The work folder is already where the task runs, so nothing is copied: :meth:`launch` starts
the fixed wrapper (:func:`everest_local.processes.spawn`) in ``<task-dir>/work``, as the
task account of the job's owner when the server is root (:mod:`everest_local.task_users`),
in a container (:mod:`everest_local.containment`) that is ended as a whole once the wrapper
has ended: nothing the task started outlives it.
The handle is ``{"dir", "pid", "pstart"}``: a process is the pid *and* its start time, so a
pid reused after a restart is never mistaken for the task.

Ends are seen without polling each task: the executor calls :meth:`poll` on SIGCHLD and on
its periodic sweep; a child of this server is reaped through its ``Popen``, a task
re-adopted after a restart (not our child) through the wrapper's ``exit`` file and
``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from everest_local import processes
from everest_local.backends.base import Backend, Report, TaskSpec, read_pid, read_status
from everest_local.containment import Containment, ContainmentKind
from everest_local.outcome import LOST_WHILE_DOWN
from everest_local.resources import Resource
from everest_local.staging import StagingError, resolve_executable
from everest_local.task_users import TaskAccounts


class LocalBackend(Backend):
    """The resource of kind ``local``: this machine's processes."""

    stages_on_loop = True
    handle_before_launch = False
    running_at_launch = True

    def __init__(self, resource: Resource, accounts: TaskAccounts,
                 containment: Containment | None = None):
        super().__init__(resource)
        self.accounts = accounts
        self.containment = containment
        self._children: dict[int, subprocess.Popen] = {}  # pid -> our child
        self._waiting: dict[str, tuple[dict[str, Any], asyncio.Future]] = {}  # by folder
        self._ended: dict[int, int] = {}  # pid -> status of a starter-run task's end
        self._via_starter: dict[int, int | None] = {}  # pid -> its pidfd, while it runs
        self._exited: set[int] = set()  # starters whose pidfd said they exited
        self._listening = False

    def handle_for(self, spec: TaskSpec) -> dict[str, Any]:
        return {"dir": str(spec.dir)}

    def stored_handle(self, task: Any) -> dict[str, Any] | None:
        # the pid columns predate handles: a local task is named by them (and its folder)
        return {"dir": task.dir, "pid": task.pid, "pstart": task.pstart}

    def prepare(self, spec: TaskSpec) -> None:
        # the program is looked up here, where it runs (python3 is this server's Python)
        spec.argv = resolve_executable(spec.argv, spec.work, spec.env.get("PATH"))

    def describe(self, handle: dict[str, Any]) -> str:
        return f"pid {handle.get('pid')}"

    def _listen(self) -> None:
        """Use the containment's task starters from now on, and hear of the ends of the
        tasks they run (not our children: no SIGCHLD)."""
        if not self._listening and self.containment is not None:
            self._listening = True
            self.containment.listen(asyncio.get_running_loop(), self._record_end)

    def _record_end(self, pid: int, code: int) -> None:
        self._ended[pid] = code
        self.poll()

    async def launch(self, spec: TaskSpec, handle: dict[str, Any]) -> dict[str, Any]:
        self._listen()
        slow = not self.accounts.known(spec.owner) or (
            self.containment is not None and self.containment.kind is ContainmentKind.SUBREAPER)
        if slow:  # creating an account, starting a reaper: not on the event loop
            spawned = await asyncio.get_running_loop().run_in_executor(None, self._spawn, spec)
        else:
            spawned = self._spawn(spec)
        admitted = self.containment.admission(spawned.pid) if self.containment else None
        if admitted is not None:  # the task is let go once in its container (off the loop)
            try:
                await asyncio.wrap_future(admitted)
            except OSError as exc:  # it ended unstarted; nothing of it runs
                raise StagingError(f"the task could not be contained: {exc}") from exc
        if spawned.popen is not None:
            self._children[spawned.pid] = spawned.popen
        else:
            self._watch_starter(spawned.pid)
        return {**handle, "pid": spawned.pid, "pstart": spawned.start_time}

    def _watch_starter(self, pid: int) -> None:
        """A starter runs the task (not our child): its exit is seen through a pidfd on
        the loop (its ``exit`` file is written by then), its status also reported by the
        forker (which tells a killed one's signal)."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # no pidfd here, or already gone: the forker's report says
            self._via_starter[pid] = None
            return
        self._via_starter[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._starter_exited, pid)

    def _starter_exited(self, pid: int) -> None:
        self._unwatch(pid)
        self._exited.add(pid)
        self.poll()

    def _unwatch(self, pid: int) -> None:
        fd = self._via_starter.get(pid)
        if fd is not None:
            self._via_starter[pid] = None
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _spawn(self, spec: TaskSpec) -> processes.Spawned:
        try:
            user = self.accounts.for_owner(spec.owner)
        except ValueError as exc:  # a per-user account that could not be created
            raise StagingError(str(exc)) from exc
        env = user.env(spec.env, spec.work) if user is not None else spec.env
        try:
            return processes.spawn(spec.argv, spec.work, spec.dir, env, user, self.containment)
        except OSError as exc:  # this machine's own words (no such program, permission)
            raise StagingError(str(exc)) from exc

    async def started(self, handle: dict[str, Any]) -> bool:
        folder = Path(handle["dir"])
        return bool(handle.get("pid")) or read_pid(folder) is not None or \
            read_status(folder) is not None

    async def wait(self, handle: dict[str, Any], report: Report) -> tuple[int | None, str]:
        pid = handle.get("pid") or read_pid(Path(handle["dir"])) or 0
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        key = handle["dir"]  # not the pid: a task lost without one has none to tell apart
        self._waiting[key] = ({**handle, "pid": pid}, future)
        self._check(key)
        try:
            ended = await future
        finally:
            self._waiting.pop(key, None)
            self._children.pop(pid, None)
            self._ended.pop(pid, None)
            if pid in self._via_starter:
                self._unwatch(pid)
                del self._via_starter[pid]
            self._exited.discard(pid)
        name = Path(handle["dir"]).name
        if self.containment is not None and not self.containment.release_if_empty(name):
            # what the task left running ends with it (killing and waiting: off the loop)
            await asyncio.get_running_loop().run_in_executor(None, self.containment.end, name)
        return ended

    def poll(self) -> None:
        for key in list(self._waiting):
            self._check(key)

    def _check(self, key: str) -> None:
        handle, future = self._waiting[key]
        pid = handle["pid"]
        if future.done():
            return
        child = self._children.get(pid)
        if child is not None:
            code = child.poll()
            if code is not None:
                future.set_result((code, ""))
            return
        code = self._ended.pop(pid, None)
        if code is not None:  # told by the starter's forker
            future.set_result((code, ""))
            return
        folder = Path(handle["dir"])
        if pid in self._via_starter and self.containment is not None and \
                self.containment.reporting:
            code = read_status(folder) if pid in self._exited else None
            if code is not None:  # written before the starter exited
                future.set_result((code, ""))
            return  # else the forker says how it ended (a killed starter wrote nothing)
        code = read_status(folder)
        if code is None and pid and processes.is_alive(pid, handle.get("pstart")):
            return
        if code is None:  # the exit file is written before the wrapper exits: look again
            code = read_status(folder)
        future.set_result((code, "" if code is not None else LOST_WHILE_DOWN))

    async def signal(self, handle: dict[str, Any], sig: int) -> None:
        processes.signal_group(handle.get("pid") or 0, sig, handle.get("pstart"))

    async def collect(self, handle: dict[str, Any], task_dir: Path) -> None:
        return None  # the task ran in its work folder here

    async def remove(self, handle: dict[str, Any]) -> None:
        return None  # the executor removes task folders here in batches
