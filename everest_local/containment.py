"""Process containers for local tasks: when a task ends, nothing it started stays alive.

A task's command may leave processes behind on purpose or not: a ``setsid`` daemon, a
double-forked ``nohup sleep &``. Signalling the wrapper's process group (see
:mod:`everest_local.processes`) misses those, and on a shared account they could read a
later task's ``EVEREST_TASK_TOKEN``. So every local task runs in a container that the
server ends as a whole when the task ends (DONE, FAILED, cancelled, time limit, deleted):

- **cgroup** (where the machine has cgroup v2 and the server may create cgroups: root, or
  a delegated subtree): each task gets the cgroup ``<server's cgroup>/everest-<id>/<task>``.
  The wrapper starts blocked on its stdin (:data:`GATE`), a worker thread of the server
  moves it into the cgroup, then lets it go; so every process it starts is born inside,
  and no process can leave a cgroup it may not write to. Ending writes
  ``cgroup.kill`` (or kills ``cgroup.procs`` until it is empty on kernels before 5.14),
  waits until the cgroup is unpopulated and removes it. The
  cgroup's name comes from the task id, so a restarted server finds it again.
- **subreaper** (the fallback: no cgroup v2, or no right to create cgroups): a small
  reaper process (:data:`REAPER`, this server's Python) marks itself
  ``PR_SET_CHILD_SUBREAPER`` and starts the wrapper as its child, in a process group of its
  own (the one cancel signals). Every process the task orphans — a double fork, ``setsid``
  — is re-parented to the reaper instead of to init; when the wrapper ends, the reaper
  kills all its remaining descendants, reaps them, and exits with the wrapper's status.
  On a root server the reaper stays root (a task cannot kill it) and starts the wrapper
  as the task's account. What it cannot catch: a process started outside the task's tree
  on its behalf (``at``, ``ssh localhost``, a D-Bus activated service).

:func:`open_containment` picks the kind (setting ``task_containment``: ``auto`` tries
cgroup, then subreaper).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import hashlib
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from everest_local.starters import Starter, Starters, remove_cgroup
from everest_local.task_users import switch_prefix

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
END_WAIT = 5.0
"""Seconds :meth:`Containment.end` waits for killed processes to be gone."""

GATE = 'read -r go && [ "$go" = go ] || exit 125; exec </dev/null; '
"""Prefix of the wrapper in a cgroup: it waits on stdin until the server has moved it
(``go``), so nothing it starts is born outside; anything else (EOF) ends it unstarted, with
status 125."""


REAPER = r'''
import ctypes, os, signal, sys
uid, gid, fd = (int(a) for a in sys.argv[1:4])
argv = sys.argv[4:]
os.set_inheritable(fd, False)
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    os.write(2, b"everest: cannot become a child subreaper\n")
    sys.exit(125)
pid = os.fork()
if pid == 0:
    try:
        os.setpgid(0, 0)
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        if uid >= 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
os.write(fd, b"%d\n" % pid)
os.close(fd)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
me = os.getpid()


def descendants():
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] != b"Z":
                parent[int(name)] = int(fields[1])
    found, frontier = [], {me}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        found += frontier
    return found


def reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


status = None
while status is None:
    try:
        got, st = os.waitpid(-1, 0)
    except InterruptedError:
        continue
    if got == pid:
        status = st
for _ in range(1000):
    left = descendants()
    if not left:
        break
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    reap()
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig != signal.SIGKILL and sig != signal.SIGSTOP:
        signal.signal(sig, signal.SIG_DFL)
    os.kill(me, sig)
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128)
'''
"""``python -I -S -c REAPER <uid> <gid> <fd> <argv...>``: the subreaper (module docstring).
It writes the child's pid to ``fd``; ``uid``/``gid`` -1 keep its own account."""


class ContainmentKind(str, enum.Enum):
    """How a server contains its local tasks (see the module docstring)."""

    CGROUP = "cgroup"
    SUBREAPER = "subreaper"


class Containment(ABC):
    """Starts local task processes in containers and ends the containers."""

    kind: ContainmentKind

    @abstractmethod
    def start(self, name: str, script: str, args: list[str], *, uid: int | None = None,
              gid: int | None = None, **popen: Any) -> tuple[subprocess.Popen, int]:
        """Start ``/bin/sh -c script sh args...`` (the wrapper) as the task ``name``'s
        first process, in its own session and process group, as ``uid``/``gid`` when given
        (no supplementary groups); ``popen`` are further :class:`subprocess.Popen`
        arguments (cwd, env, stdout, stderr, umask). Returns the child to wait for (its
        status is the wrapper's) and the pid of the wrapper, which leads the process group
        to signal. Raises
        ``OSError`` when it cannot start or cannot be contained (nothing is left running;
        a cgroup kind may find that out after returning: see :meth:`admission`)."""

    @abstractmethod
    def end(self, name: str) -> None:
        """Kill whatever task ``name`` left running and release its container (blocking;
        the task's wrapper has ended). A no-op for a container that does not exist."""

    def admission(self, pid: int) -> concurrent.futures.Future | None:
        """The move into its container of the task started as ``pid``, when it is still
        under way (it ends with None, or OSError: the task ended unstarted); None: there
        is nothing to wait for. Call it once, right after :meth:`start`."""
        return None

    def release_if_empty(self, name: str) -> bool:
        """Release task ``name``'s container at once if nothing of it runs any more (no
        wait, cheap enough for the event loop); False: call :meth:`end` (off the loop)."""
        return False

    def take_starter(self, uid: int | None, gid: int | None) -> Starter | None:
        """A task starter ready for ``uid``/``gid`` (see :class:`CgroupContainment`); this
        kind has none."""
        return None

    def start_with(self, starter: Starter, name: str, task_dir: Path, argv: list[str],
                   env: dict[str, str]) -> tuple[int, int | None]:
        """Start a task through a starter of :meth:`take_starter`."""
        raise OSError("this containment has no task starters")

    def listen(self, loop: asyncio.AbstractEventLoop,  # noqa: B027 - most kinds: none
               callback: Callable[[int, int], None]) -> None:
        """Have task starters from now on (:meth:`take_starter`) and call
        ``callback(pid, code)`` on ``loop`` when a task started with :meth:`start_with`
        ends (``code`` as :attr:`subprocess.Popen.returncode`)."""

    @property
    def reporting(self) -> bool:
        """True while the end of every task started with :meth:`start_with` is still
        reported to :meth:`listen`'s callback (False: the starters' forker is gone)."""
        return False

    def tidy(self) -> None:  # noqa: B027 - most kinds hold nothing between tasks
        """Let go of what was kept ready for accounts not used for a while (called often,
        on the event loop)."""

    def close(self) -> None:  # noqa: B027 - optional: most kinds hold nothing
        """The server stops: release what the containment itself holds."""


class CgroupContainment(Containment):
    """Containers as cgroup v2 children of ``base`` (see the module docstring)."""

    kind = ContainmentKind.CGROUP

    def __init__(self, base: Path, records: Path | None = None, ready: int = 0):
        """``records``: where a server keeps which starter cgroup each task runs in (its
        starters, :mod:`everest_local.starters`, are used when given, ``ready`` kept per
        task account)."""
        self.base = base
        self._admitter: concurrent.futures.ThreadPoolExecutor | None = None
        self._admissions: dict[int, concurrent.futures.Future] = {}  # pid -> its move
        self.starters: Starters | None = None
        if records is not None and ready > 0:
            self.starters = Starters(base, records, ready)
            self.starters.sweep(lambda folder: self._end(base / folder, folder))

    def _cgroup(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"not a task name: {name!r}")
        if self.starters is not None:
            started_in = self.starters.recorded(name)
            if started_in is not None:
                return self.base / started_in
        return self.base / name

    def take_starter(self, uid: int | None, gid: int | None) -> Starter | None:
        """A ready starter for tasks of ``uid``/``gid`` (None: the server's own account),
        or None when there is none yet (then start the task with :meth:`start`)."""
        if self.starters is None:
            return None
        account = (-1, -1) if uid is None else (uid, gid if gid is not None else uid)
        return self.starters.take(account)

    def start_with(self, starter: Starter, name: str, task_dir: Path, argv: list[str],
                   env: dict[str, str]) -> tuple[int, int | None]:
        """Run ``argv`` as task ``name`` (folder ``task_dir``, handed to the task's account
        already) through ``starter``: its pid (the wrapper's, leading the process group to
        signal) and start time. ``OSError`` when the starter cannot be reached (nothing
        of the task runs)."""
        assert self.starters is not None
        if self._cgroup(name).exists():
            self.end(name)  # an earlier try of this task that never ended cleanly
        spec = json.dumps({"dir": str(task_dir), "argv": argv, "env": env}).encode()
        try:
            self.starters.run(starter, name, spec)
        except OSError:
            self.end(name)
            raise
        return starter.pid, starter.pstart

    def listen(self, loop: asyncio.AbstractEventLoop,
               callback: Callable[[int, int], None]) -> None:
        if self.starters is not None:
            self.starters.listen(loop, callback)

    @property
    def reporting(self) -> bool:
        return self.starters is not None and self.starters.reporting

    def tidy(self) -> None:
        if self.starters is not None:
            self.starters.tidy()

    def start(self, name: str, script: str, args: list[str], *, uid: int | None = None,
              gid: int | None = None, **popen: Any) -> tuple[subprocess.Popen, int]:
        cgroup = self._cgroup(name)
        if cgroup.exists():  # an earlier try of this task that never ended cleanly
            self.end(name)
        cgroup.mkdir()
        switch = [] if uid is None else switch_prefix(uid, gid if gid is not None else uid)
        # with setpriv the server is not forked (vfork); without it, Popen switches account
        account = {} if switch is not None else {"user": uid, "group": gid,
                                                 "extra_groups": []}
        try:
            child = subprocess.Popen(
                [*(switch or []), "/bin/sh", "-c", GATE + script, "sh", *args],
                stdin=subprocess.PIPE, start_new_session=True, close_fds=True, **account,
                **popen)
        except OSError:
            _rmdir(cgroup)
            raise
        self._admissions[child.pid] = self._admitting().submit(self._admit, name, cgroup,
                                                                child)
        return child, child.pid

    def admission(self, pid: int) -> concurrent.futures.Future | None:
        return self._admissions.pop(pid, None)

    def _admit(self, name: str, cgroup: Path, child: subprocess.Popen) -> None:
        """Move a gated task's first process into its cgroup, then let it go (a worker
        thread: the kernel makes a move wait for an RCU grace period, milliseconds the
        event loop need not spend). If it cannot be moved, it is killed unstarted, its
        cgroup released, and the OSError raised."""
        assert child.stdin is not None
        try:
            (cgroup / "cgroup.procs").write_text(f"{child.pid}\n")
            child.stdin.write(b"go\n")
        except OSError:
            child.kill()
            child.wait()
            self.end(name)
            raise
        finally:
            try:
                child.stdin.close()
            except OSError:
                pass

    def _admitting(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._admitter is None:
            self._admitter = concurrent.futures.ThreadPoolExecutor(
                4, thread_name_prefix="cgroup-admit")
        return self._admitter

    def end(self, name: str) -> None:
        self._end(self._cgroup(name), name)
        if self.starters is not None:
            self.starters.forget_record(name)

    def _end(self, cgroup: Path, name: str) -> None:
        if not cgroup.is_dir():
            return
        kill = cgroup / "cgroup.kill"
        deadline = time.monotonic() + END_WAIT
        while _populated(cgroup) and time.monotonic() < deadline:
            if kill.exists():
                kill.write_text("1\n")
            else:  # before Linux 5.14: kill each, again for any forked meanwhile
                for pid in _pids(cgroup):
                    _kill(pid)
            time.sleep(0.005)
        if _populated(cgroup):
            log.warning("task %s: processes still in %s after SIGKILL", name, cgroup)
            return
        _rmdir(cgroup)

    def release_if_empty(self, name: str) -> bool:
        cgroup = self._cgroup(name)
        if _populated(cgroup):
            return False
        try:
            cgroup.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # the kernel is not done with the last exit yet: end() retries
            return False
        if self.starters is not None:
            self.starters.forget_record(name)
        return True

    def close(self) -> None:
        if self.starters is not None:
            self.starters.close()
            # and any starter it had not heard of yet (forked as the server stopped)
            self.starters.sweep(lambda folder: self._end(self.base / folder, folder))
            self.starters.forget_folder()
        if self._admitter is not None:
            self._admitter.shutdown(wait=True)
        try:
            self.base.rmdir()  # only once empty: tasks still running keep theirs
        except OSError:
            pass


class SubreaperContainment(Containment):
    """Containers as subreaper processes (see the module docstring)."""

    kind = ContainmentKind.SUBREAPER

    def __init__(self, python: str = sys.executable):
        self.python = python

    def start(self, name: str, script: str, args: list[str], *, uid: int | None = None,
              gid: int | None = None, **popen: Any) -> tuple[subprocess.Popen, int]:
        read_end, write_end = os.pipe()
        try:
            child = subprocess.Popen(
                [self.python, "-I", "-S", "-c", REAPER,
                 str(-1 if uid is None else uid), str(-1 if gid is None else gid),
                 str(write_end), "/bin/sh", "-c", script, "sh", *args],
                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                pass_fds=(write_end,), **popen)
            os.close(write_end)
            write_end = -1
            pid = _read_pid(read_end, child)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if pid is None:
            child.kill()
            code = child.wait()
            raise OSError(f"the task's reaper could not start its command (status {code})")
        return child, pid

    def end(self, name: str) -> None:
        # the reaper ends what is left when the wrapper ends; wait for it to be done (our
        # child was waited for already, but a task re-adopted after a restart is not)
        deadline = time.monotonic() + END_WAIT
        while _reapers_of(name) and time.monotonic() < deadline:
            time.sleep(0.005)


def open_containment(setting: str, tasks_root: Path, ready: int = 0) -> Containment:
    """The containment a server with task folders under ``tasks_root`` uses: ``setting``
    is ``auto`` (cgroup when it works here, else subreaper), ``cgroup`` (``ValueError``
    saying why when it does not work here) or ``subreaper``. In cgroups, ``ready``
    starters per task account are kept (:mod:`everest_local.starters`; 0: none), their
    records in :func:`records_folder`."""
    if setting == ContainmentKind.SUBREAPER.value:
        return SubreaperContainment()
    try:
        base = cgroup_base(tasks_root)
        log.info("containing tasks in cgroups under %s", base)
        return CgroupContainment(base, records_folder(base, tasks_root), ready)
    except OSError as exc:
        if setting == ContainmentKind.CGROUP.value:
            raise ValueError(f"tasks cannot be contained in cgroups here ({exc}); use "
                             "--task-containment subreaper or auto") from None
        log.info("containing tasks with a subreaper: no cgroup v2 to use (%s)", exc)
        return SubreaperContainment()


def records_folder(base: Path, tasks_root: Path) -> Path:
    """Where a server whose tasks' cgroups are under ``base`` records which cgroup each
    task started by a starter runs in: as volatile as the cgroups themselves, so under
    ``/run/everest-jupyter`` for a root server (a tmpfs on most machines; written on every
    task start), else ``<tasks_root>/.cgroups``. Only this server's account may enter it."""
    if os.geteuid() == 0 and os.path.isdir("/run"):
        top = Path("/run/everest-jupyter")
        try:
            top.mkdir(mode=0o700, exist_ok=True)
            os.chmod(top, 0o700)
            return top / base.name
        except OSError as exc:  # a read-only /run: the tasks root will do
            log.info("task records go under %s, not %s (%s)", tasks_root, top, exc)
    return tasks_root / ".cgroups"


def cgroup_base(tasks_root: Path) -> Path:
    """The cgroup this server's tasks' cgroups go under (created, and tried once with a
    short-lived process); ``OSError`` saying why when cgroup v2 cannot be used here."""
    mount = _cgroup2_mount()
    own = _own_cgroup()
    digest = hashlib.sha256(str(tasks_root).encode()).hexdigest()[:12]
    base = mount / own.lstrip("/") / f"everest-{digest}"
    base.mkdir(exist_ok=True)
    probe = base / ".probe"
    if probe.exists():
        CgroupContainment(base).end(".probe")
    probe.mkdir()
    try:
        sleeper = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            (probe / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        _rmdir(probe)
    return base


def _cgroup2_mount() -> Path:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4])
    raise OSError("no cgroup2 file system is mounted")


def _own_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    raise OSError("this process is in no cgroup v2")


def _populated(cgroup: Path) -> bool:
    try:
        return "populated 1" in (cgroup / "cgroup.events").read_text()
    except FileNotFoundError:
        return False


def _pids(cgroup: Path) -> list[int]:
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _rmdir(cgroup: Path) -> None:
    if not remove_cgroup(cgroup, tries=100, pause=0.01):
        log.warning("could not remove the cgroup %s", cgroup)


def _reapers_of(name: str) -> list[int]:
    """Running reapers of task ``name`` (their command line holds :data:`REAPER` and the
    task's folder, ``.../<name>``)."""
    tail = f"/{name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if _REAPER_BYTES in args and any(a.endswith(tail) for a in args):
            found.append(int(entry))
    return found


_REAPER_BYTES = REAPER.encode()


def _read_pid(fd: int, child: subprocess.Popen) -> int | None:
    """The pid the reaper reports on ``fd`` (None if it exits or stays silent 30 s)."""
    data = b""
    deadline = time.monotonic() + 30
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 32)
            if not chunk:
                return None
            data += chunk
        elif child.poll() is not None:
            return None
    try:
        return int(data)
    except ValueError:
        return None
