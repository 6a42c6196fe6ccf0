"""Task processes that outlive the server: spawn, identify, signal, read the exit status.

Each task runs under a constant ``/bin/sh`` wrapper, in its own session (so its own process
group, which cancel signals as a whole, and which survives ``kill -9`` of the server). The
wrapper writes its pid to ``pid`` and, when the command ends, the exit status to ``exit``
next to the work directory. That record is written by one ``write(2)`` of a few bytes and
counts only once complete (it ends with a newline), so a reader never takes a half-written
status for a real one — atomic without a ``mv`` process per task. The wrapper
script is a constant: the command and its arguments are passed as ``"$@"`` and never
parsed by the shell. It traps SIGINT/SIGTERM with a no-op handler (not ignored, so the
command still gets the default actions) so that an interrupted command's status is
still written.

A process is identified by pid *and* start time (``/proc/<pid>/stat`` field 22): after a
restart, a pid that now belongs to another process is not mistaken for the task.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from everest_local.containment import Containment
from everest_local.task_users import TaskUser, hand_over, switch_prefix

WRAPPER = ('trap : INT TERM; d=$1; shift; echo "$$" > "$d/pid"; "$@"; s=$?; '
           'echo "$s" > "$d/exit"; exit "$s"')
"""``sh -c WRAPPER sh <task-dir> <argv...>``: writes ``<task-dir>/pid`` and ``<task-dir>/exit``."""

PID_FILE = "pid"
EXIT_FILE = "exit"


@dataclass
class Spawned:
    """A started task process: the Popen (None once adopted) and its identity."""

    pid: int
    start_time: int | None
    popen: subprocess.Popen | None = None


def spawn(argv: list[str], work: Path, task_dir: Path, env: dict[str, str],
          user: TaskUser | None = None, container: Containment | None = None) -> Spawned:
    """Start ``argv`` in ``work`` under the wrapper; stdout/stderr go to files there.

    With ``user`` (a server running as root) the task folder is handed to that account and
    the process runs as it, with no supplementary groups and umask 077. With ``container``
    the task runs in a container named after its folder, which
    :meth:`Containment.end` ends as a whole (see :mod:`everest_local.containment`); the
    returned pid is then still the wrapper's, which leads the process group cancel signals.
    Where the container has a task starter ready (:mod:`everest_local.starters`), that
    process, already running as ``user`` in its own container, starts the command and
    is the wrapper (the returned ``popen`` is then None: it is not this server's child).
    Raises ``OSError`` if the process cannot be started.
    """
    if container is not None:
        starter = container.take_starter(user.uid if user else None,
                                         user.gid if user else None)
        if starter is not None:
            if user is not None:
                hand_over(task_dir, user)
            try:
                pid, pstart = container.start_with(starter, task_dir.name, task_dir, argv,
                                                   env)
                return Spawned(pid=pid, start_time=pstart)
            except OSError:  # the starters' forker is gone: the usual way (below)
                pass
    with _outputs(task_dir) as (out, err):
        if user is not None:  # the folder may be the account's already: no link followed
            hand_over(task_dir, user)
        umask = {} if user is None else {"umask": 0o077}
        if container is not None:
            popen, pid = container.start(
                task_dir.name, WRAPPER, [str(task_dir), *argv],
                uid=user.uid if user else None, gid=user.gid if user else None,
                cwd=work, env=env, stdout=out, stderr=err, **umask)
            return Spawned(pid=pid, start_time=start_time(pid), popen=popen)
        switch = [] if user is None else switch_prefix(user.uid, user.gid)
        account = {} if switch is not None else {"user": user.uid, "group": user.gid,
                                                 "extra_groups": []}
        popen = subprocess.Popen(
            [*(switch or []), "/bin/sh", "-c", WRAPPER, "sh", str(task_dir), *argv],
            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, close_fds=True, **account, **umask,
        )
    return Spawned(pid=popen.pid, start_time=start_time(popen.pid), popen=popen)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def _outputs(task_dir: Path) -> Iterator[tuple[int, int]]:
    """``work/stdout`` and ``work/stderr`` of a task folder, created (or emptied) for
    writing beneath it without following a link, as descriptors."""
    folder = os.open(task_dir, _DIR)
    opened: list[int] = []
    try:
        work = os.open("work", _DIR, dir_fd=folder)
        opened.append(work)
        for name in ("stdout", "stderr"):
            opened.append(os.open(name, _NEW, 0o600, dir_fd=work))
        yield opened[1], opened[2]
    finally:
        for fd in (folder, *opened):
            os.close(fd)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None  # a zombie has finished
    return int(fields[19])


def is_alive(pid: int, expected_start: int | None) -> bool:
    """True when ``pid`` runs and is the same process that started at ``expected_start``."""
    now = start_time(pid)
    return now is not None and (expected_start is None or now == expected_start)


def signal_group(pid: int, sig: int, expected_start: int | None) -> bool:
    """Send ``sig`` to the task's process group, if it is still that process; True if sent."""
    if not is_alive(pid, expected_start):
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def read_exit_status(task_dir: Path) -> int | None:
    """The exit status the wrapper recorded, or None if it has not (yet)."""
    try:
        text = (task_dir / EXIT_FILE).read_text()
    except OSError:
        return None
    if not text.endswith("\n"):
        return None  # not (completely) written yet
    try:
        return int(text)
    except ValueError:
        return None


def read_pid(task_dir: Path) -> int | None:
    """The wrapper's pid from its pid file, or None."""
    try:
        text = (task_dir / PID_FILE).read_text()
        return int(text) if text.endswith("\n") else None
    except (OSError, ValueError):
        return None


def describe_status(code: int) -> str:
    """Human words for an exit status (shell convention: 128+N is signal N)."""
    if code < 0:
        return f"killed by {_signame(-code)}"
    if code > 128 and code - 128 < 65:
        return f"exit code {code} ({_signame(code - 128)})"
    return f"exit code {code}"


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
