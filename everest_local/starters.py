"""Task starters: local tasks started by a process already running as the task's account,
already inside a fresh cgroup of its own, so that starting a task costs one process start
and no cgroup move (see :mod:`everest_local.containment` for what a container is).

One *forker* per server (:data:`FORKER`, this server's Python with ``-I -S``, started once,
running as the server's account) forks *starters* on request. A starter, right after the
fork, leaves the forker's session, switches to the task account it was forked for (no
supplementary groups, umask 077), marks itself not dumpable (so another process of that
account can neither trace it nor open its descriptors) and blocks reading its spec from a
pipe only the forker holds. Meanwhile the server moves it into a fresh cgroup
``<base>/.s-<pid>-<start>`` (a worker thread: the move waits for the kernel) and only then
counts it ready. Starting a task is: write a record ``<records>/<task>`` naming that cgroup
(the cgroup cannot be renamed: cgroup v2 refuses ``rename(2)``), then send the spec (the
task folder, argv, environment) to the starter through the forker. The starter opens the
folder, ``work``, ``stdout``, ``stderr`` and writes ``pid`` beneath it without following
links, starts the command (``posix_spawn``, stdin ``/dev/null``, default signal actions),
and then does what the ``sh`` wrapper of :mod:`everest_local.processes` does: it ignores
SIGINT/SIGTERM meant for the command's process group (a no-op handler), waits, writes
``exit`` (the shell's status: 128+N for signal N) and exits with that status. The forker
reports each starter's end (``X <pid> <code>``) so the server need not poll.

When the server stops, or is killed, the forker reads end of file, closes every idle
starter's pipe and exits; an idle starter reads end of file and exits without running
anything. Its cgroup is removed at the next start (:meth:`Starters.sweep`): a starter
cgroup that no record names, or that is empty, is never a task's. A starter that ran a task
is the task's wrapper and lives on like one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = ".s-"
"""Names of starter cgroups (a task's own cgroup is named after the task: never a dot)."""

FORKER = r"""
import ctypes, json, os, select, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
BASE, RECORDS = sys.argv[1:3]
RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WR = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
DFL = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGQUIT,
       signal.SIGHUP, signal.SIGCHLD)


def contain(uid, gid):
    # a cgroup of its own, entered while still this account (the kernel's wait for the
    # move is this process's, not the forker's), then the word "ready" to the server
    pid = os.getpid()
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    start = int(stat[stat.rindex(b")") + 2:].split()[19])
    name = ".s-%d-%d" % (pid, start)
    try:
        os.mkdir(os.path.join(BASE, name))
        with open(os.path.join(BASE, name, "cgroup.procs"), "w") as f:
            f.write("0\n")
    except OSError:
        name = "-"
    os.write(1, b"R %d %d %d %d %s\n" % (pid, uid, gid, start, name.encode()))
    if name == "-":
        os._exit(125)


def starter(fd, uid, gid):
    code = 125
    try:
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for n in (0, 2):
            os.dup2(null, n)
        low, high = min(fd, null), max(fd, null)
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, 1 << 16)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        contain(uid, gid)
        os.dup2(null, 1)
        if uid >= 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.umask(0o077)
        libc.prctl(4, 0, 0, 0, 0)  # again: a change of account may make it dumpable
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                os._exit(0)  # never given a task: the server is gone
            data += chunk
        os.close(fd)
        spec = json.loads(data)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: None)
        folder = os.open(spec["dir"], RD)
        work = os.open("work", RD, dir_fd=folder)
        os.fchdir(work)
        out = os.open("stdout", WR, 0o600, dir_fd=work)
        err = os.open("stderr", WR, 0o600, dir_fd=work)
        pid_file = os.open("pid", WR, 0o600, dir_fd=folder)
        os.write(pid_file, b"%d\n" % os.getpid())
        os.close(pid_file)
        argv = spec["argv"]
        try:
            child = os.posix_spawn(argv[0], argv, spec["env"], file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, err, 2)], setsigdef=DFL, setsigmask=())
        except OSError as exc:
            os.write(err, ("everest: %s: %s\n" % (argv[0], exc.strerror)).encode())
            code = 127 if isinstance(exc, FileNotFoundError) else 126
        else:
            while True:
                try:
                    status = os.waitpid(child, 0)[1]
                    break
                except ChildProcessError:
                    status = 127 << 8
                    break
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code
        exit_file = os.open("exit", WR, 0o600, dir_fd=folder)
        os.write(exit_file, b"%d\n" % code)
    except BaseException:
        pass
    finally:
        os._exit(code)


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if idle.pop(pid, None) is not None:
            os.close(pipes.pop(pid))
        os.write(1, b"X %d %d\n" % (pid, os.waitstatus_to_exitcode(status)))


idle, pipes, forks = {}, {}, []
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
buf, done = b"", False
AFTER = 0.02  # a replacement waits this long: its fork and cgroup move do not slow the task
while not done or forks:
    wait = max(0.0, forks[0][0] - time.monotonic()) if forks else None
    try:  # a task's spec goes before any fork asked for
        ready = select.select([wake_r] + ([] if done else [0]), [], [], wait)[0]
    except InterruptedError:
        continue
    if wake_r in ready:
        os.read(wake_r, 512)
        reap()
    if 0 in ready:
        chunk = os.read(0, 1 << 16)
        done = not chunk
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            kind, _, rest = line.partition(b" ")
            if kind == b"F":
                forks.insert(0, (0.0, tuple(int(x) for x in rest.split())))
            elif kind == b"S":
                pid, task, cgroup, spec = rest.split(b" ", 3)
                pid = int(pid)
                w = pipes.pop(pid, None)
                account = idle.pop(pid, None)
                try:  # the record first: a task never runs in a cgroup it is not known by
                    os.symlink(cgroup, os.path.join(RECORDS.encode(), task))
                except OSError:
                    if w is not None:
                        os.close(w)
                    w = None
                if w is not None:
                    try:
                        os.write(w, spec + b"\n")
                    except OSError:
                        pass
                    os.close(w)
                if account is not None:  # its replacement
                    forks.append((time.monotonic() + AFTER, account))
        continue
    if forks and not done and forks[0][0] <= time.monotonic():
        uid, gid = forks.pop(0)[1]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            starter(r, uid, gid)
        os.close(r)
        idle[pid] = (uid, gid)
        pipes[pid] = w
    elif done:
        forks.clear()
for w in pipes.values():
    os.close(w)
"""
"""``python -I -S -c FORKER <base> <records>``: the forker (module docstring). On stdin it takes
lines ``F <uid> <gid>`` (fork a starter for that account; -1 -1: this account) and
``S <pid> <task> <cgroup> <json spec>`` (write the record ``<records>/<task>`` ->
``<cgroup>``, hand the spec to that starter, then fork its replacement); specs go before
forks. Each starter says ``R <pid> <uid> <gid> <start> <cgroup>`` on stdout
once in its cgroup (``-``: it could not be contained, and ends); the forker says
``X <pid> <code>`` when a starter ended (code as :attr:`subprocess.Popen.returncode`)."""


Account = tuple[int, int]  # (uid, gid); (-1, -1): the server's own
RETIRE_AFTER = 600.0
"""Seconds without a task after which an account's idle starters end (a new task of it
starts the slower way and asks for new ones)."""


class Starter:
    """A ready starter: its pid, its start time and its cgroup (a folder name)."""

    __slots__ = ("pid", "pstart", "cgroup")

    def __init__(self, pid: int, pstart: int | None, cgroup: str):
        self.pid, self.pstart, self.cgroup = pid, pstart, cgroup


class Starters:
    """The starter pool of one cgroup containment (module docstring): ``ready`` starters
    kept per task account, each in its own cgroup under ``base``. Reports are read on the
    event loop given to :meth:`listen`; :meth:`take` may be called from any thread."""

    def __init__(self, base: Path, records: Path, ready: int = 4,
                 python: str = sys.executable):
        self.base = base
        self.records = records
        self.ready = ready
        self.python = python
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # a spec may pass PIPE_BUF: one writer at a time
        self._pool: dict[Account, collections.deque[Starter]] = {}
        self._asked: collections.Counter[Account] = collections.Counter()  # forks under way
        self._forker: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Callable[[int, int], None] | None = None
        self._buf = b""
        self._given: set[int] = set()  # starters given a task, until reported ended
        self._used: dict[Account, float] = {}  # account -> when it last asked (monotonic)
        self._retiring: dict[int, str] = {}  # idle starters killed for disuse -> cgroup
        self._next_tidy = 0.0
        self.retire_after = RETIRE_AFTER
        self._closed = False

    # -- the pool --------------------------------------------------------------------------

    def listen(self, loop: asyncio.AbstractEventLoop,
               callback: Callable[[int, int], None]) -> None:
        """Start the forker; from now on call ``callback(pid, code)`` on ``loop`` when a
        starter that was given a task ends. Until then :meth:`take` has nothing."""
        if self._forker is not None or self._closed:
            return
        self._listener, self._loop = callback, loop
        try:
            self._forker = subprocess.Popen(
                [self.python, "-I", "-S", "-c", FORKER, str(self.base), str(self.records)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                close_fds=True, env={"PATH": "/usr/bin:/bin"}, cwd="/", bufsize=0)
        except OSError as exc:
            log.warning("task starters unavailable (%s): tasks start the slower way", exc)
            return
        assert self._forker.stdout is not None
        os.set_blocking(self._forker.stdout.fileno(), False)
        loop.add_reader(self._forker.stdout.fileno(), self._read)

    def take(self, account: Account) -> Starter | None:
        """A ready starter for ``account`` (its records are the caller's; give it its task
        with :meth:`run` at once), or None when none is ready yet; either way the pool is
        topped up in the background (the forker replaces a starter it hands a task to)."""
        if self._forker is None or self._closed:
            return None
        with self._lock:
            self._used[account] = time.monotonic()
            pool = self._pool.get(account)
            starter = pool.popleft() if pool else None
            if starter is not None:
                self._asked[account] += 1  # its replacement, forked after its task goes
            missing = self.ready - len(pool or ()) - self._asked[account]
            self._asked[account] += max(missing, 0)
        if missing > 0:
            try:
                self._send(b"F %d %d\n" % account * missing)
            except OSError:
                pass  # the forker is gone: _read says so
        return starter

    def run(self, starter: Starter, task: str, spec: bytes) -> None:
        """Record that ``task`` runs in ``starter``'s cgroup, then hand it ``spec`` (one
        line of JSON); the forker does both, then forks a replacement. ``OSError`` if the
        forker is gone (nothing of the task runs)."""
        self._given.add(starter.pid)
        try:
            self._send(b"S %d %s %s %s\n" % (starter.pid, task.encode(),
                                             starter.cgroup.encode(), spec))
        except OSError:
            self._given.discard(starter.pid)
            raise

    @property
    def reporting(self) -> bool:
        """True while the forker runs: each starter given a task is reported when it ends."""
        return self._forker is not None and not self._closed

    def _send(self, data: bytes) -> None:
        forker = self._forker
        if forker is None or forker.stdin is None:
            raise OSError("the task starters' forker is not running")
        fd = forker.stdin.fileno()
        view = memoryview(data)
        with self._writing:
            while view:
                view = view[os.write(fd, view):]

    def _read(self) -> None:
        """The forker's and the starters' reports, one line each (on the loop)."""
        assert self._forker is not None and self._forker.stdout is not None
        fd = self._forker.stdout.fileno()
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self._lost()
            return
        *lines, self._buf = (self._buf + chunk).split(b"\n")
        for line in lines:
            kind, *rest = line.split()
            if kind == b"R":
                pid, uid, gid, start = map(int, rest[:4])
                with self._lock:
                    self._asked[(uid, gid)] -= 1
                    if rest[4] != b"-":
                        self._pool.setdefault((uid, gid), collections.deque()).append(
                            Starter(pid, start, rest[4].decode()))
            elif kind == b"X":
                pid, code = int(rest[0]), int(rest[1])
                if pid in self._retiring:
                    remove_cgroup(self.base / self._retiring.pop(pid), tries=1)
                elif pid not in self._given:
                    self._forget(pid)  # an idle one (killed)
                else:
                    self._given.discard(pid)
                    if self._listener is not None:
                        self._listener(pid, code)

    def _lost(self) -> None:
        assert self._forker is not None and self._forker.stdout is not None
        if self._loop is not None:
            self._loop.remove_reader(self._forker.stdout.fileno())
        if not self._closed:
            log.warning("the task starters' forker ended: tasks start the slower way")
            self._closed = True
            self._end_idle(wait=False)  # on the loop: what is left goes at the next sweep

    def tidy(self) -> None:
        """End the idle starters of accounts that had no task for :attr:`retire_after`
        seconds (each holds about 2 MB); cheap to call often (it looks every 30 s)."""
        now = time.monotonic()
        if now < self._next_tidy:
            return
        self._next_tidy = now + 30
        with self._lock:
            idle = [account for account, last in self._used.items()
                    if now - last >= self.retire_after]
            retired = []
            for account in idle:
                del self._used[account]
                retired += self._pool.pop(account, ())
            for starter in retired:
                self._retiring[starter.pid] = starter.cgroup
        for starter in retired:
            _kill(starter.pid)

    def _forget(self, pid: int) -> None:
        """A starter ended: if it was still idle (killed), it leaves the pool."""
        gone = None
        with self._lock:
            for pool in self._pool.values():
                gone = next((s for s in pool if s.pid == pid), None)
                if gone is not None:
                    pool.remove(gone)
                    break
        if gone is not None:  # reaped already: its cgroup is empty (else: the next sweep)
            remove_cgroup(self.base / gone.cgroup, tries=1)

    def _end_idle(self, wait: bool = True) -> None:
        with self._lock:
            idle = [s for pool in self._pool.values() for s in pool]
            self._pool.clear()
        for starter in idle:
            _kill(starter.pid)
        for starter in idle:
            remove_cgroup(self.base / starter.cgroup, tries=200 if wait else 1)

    # -- records and leftovers --------------------------------------------------------------

    def recorded(self, task: str) -> str | None:
        """The cgroup folder name recorded for ``task``, or None."""
        try:
            name = os.readlink(self.records / task)
        except OSError:
            return None
        return name if name.startswith(PREFIX) and "/" not in name else None

    def forget_record(self, task: str) -> None:
        try:
            os.unlink(self.records / task)
        except FileNotFoundError:
            pass

    def sweep(self, end: Callable[[str], None]) -> None:
        """At the server's start and stop: end (with ``end(cgroup name)``) every starter
        cgroup that is not a task's (no record names it: an idle starter, maybe of an
        earlier server), and drop the records whose cgroup is gone."""
        self.records.mkdir(mode=0o700, exist_ok=True)
        named = {}
        for entry in os.listdir(self.records):
            target = self.recorded(entry)
            if target is None or not (self.base / target).is_dir():
                self.forget_record(entry)
            else:
                named[target] = entry
        for entry in os.listdir(self.base):
            if entry.startswith(PREFIX) and entry not in named:
                end(entry)

    def close(self) -> None:
        """The server stops: the forker and the idle starters end (they read end of
        file); their cgroups are removed once empty."""
        self._closed = True
        forker = self._forker
        if forker is not None and forker.stdin is not None and forker.stdout is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(forker.stdout.fileno())
            try:
                forker.stdin.close()
            except OSError:
                pass
            try:
                forker.wait(5)
            except subprocess.TimeoutExpired:
                forker.kill()
                forker.wait()
            forker.stdout.close()
        self._end_idle()

    def forget_folder(self) -> None:
        """Remove the records' folder if no task is recorded in it any more."""
        try:
            self.records.rmdir()
        except OSError:
            pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def remove_cgroup(cgroup: Path, tries: int = 200, pause: float = 0.005) -> bool:
    """Remove an emptied cgroup, looking ``tries`` times ``pause`` apart (the kernel may
    take a moment after the last process left); whether it is gone."""
    for attempt in range(tries):
        try:
            cgroup.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if attempt + 1 < tries:
                time.sleep(pause)
    return False
    if tries > 1:
        log.warning("could not remove the cgroup %s", cgroup)
