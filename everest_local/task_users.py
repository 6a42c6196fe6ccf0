"""Which OS account runs each user's tasks, so that a task cannot read the server's state.

A task is a user's code. Run as the server's own account it could read the server's
database (every user's jobs, every token's hash), every user's uploads and outputs, and the
session relay's state. So:

- **A server running as root** never runs a task as root or as itself: by default each
  Everest user's tasks run as an unprivileged account of their own,
  ``everest-task-<hash of the user name>`` (:func:`account_for`), created the first time
  it is needed; so one user's task cannot read another's running task (its
  ``/proc/<pid>/environ`` holds the task token). ``task_user`` names one account for
  every user instead (all share it), and ``task_users`` maps Everest users to accounts of
  the admin's choice. Each task's folder is handed to that account (mode 0700),
  everything else under the data directory stays root's (0700/0600).
- **A server running as an ordinary account** cannot switch accounts; its tasks run as that
  account. That is right for the embedded default (one person, their own server). With
  more than one user it is not: the server says so and refuses to start unless the admin
  accepts it (``allow_shared_task_user``).

Per-user and mapped accounts give isolation between users' running tasks too; with one
shared ``task_user``, tasks of different users share one OS account (each other's running
processes and work folders are reachable to a task that looks), while the server's state
is not. Accounts are named after the user name alone, so two servers on one machine give
their users of the same name the same account; accounts are never removed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PER_USER_PREFIX = "everest-task-"
_ACCOUNT_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # useradd's portable names
_PRIVATE_ENV = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                "IPYTHONDIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
                "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "MPLCONFIGDIR")


@dataclass(frozen=True)
class TaskUser:
    """An unprivileged OS account a task runs as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> TaskUser:
        """The account ``name``; ``ValueError`` saying how to create it when it is missing."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"the task account {name!r} does not exist: create it (e.g. "
                             f"`useradd --system --shell /usr/sbin/nologin {name}`) or name "
                             "another with --task-user") from None
        if entry.pw_uid == 0:
            raise ValueError(f"the task account {name!r} is root: tasks never run as root")
        return cls(name, entry.pw_uid, entry.pw_gid)

    def env(self, env: dict[str, str], work: Path) -> dict[str, str]:
        """``env`` for a task of this account: its home is its work folder, and variables
        naming the server's private folders are dropped."""
        out = {k: v for k, v in env.items() if k not in _PRIVATE_ENV}
        out.update(HOME=str(work), USER=self.name, LOGNAME=self.name)
        return out


ANY_ACCOUNT = TaskUser("(any new account)", -1, -1)
"""Stands for a per-user account not created yet: it may pass where others may."""


def account_for(user: str) -> str:
    """The OS account a root server creates for Everest user ``user`` by default:
    ``everest-task-`` and 12 hex digits of the name's SHA-256 (a valid, short account
    name whatever the user name is)."""
    return PER_USER_PREFIX + hashlib.sha256(user.encode()).hexdigest()[:12]


_CREATING = threading.Lock()


def ensure_account(name: str) -> TaskUser:
    """The account ``name``, created first when missing (a system account with no home
    and no login shell: ``useradd`` with an argument list, never a shell); ``ValueError``
    with the reason when it cannot be created."""
    with _CREATING:
        try:
            pwd.getpwnam(name)
        except KeyError:
            if not _ACCOUNT_NAME.match(name):
                raise ValueError(f"cannot create the task account {name!r}: not a valid "
                                 "account name (lower-case letters, digits, _ and -)") from None
            try:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", name],
                               check=True, capture_output=True, text=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                try:  # another server on this machine may have just created it
                    pwd.getpwnam(name)
                except KeyError:
                    detail = getattr(exc, "stderr", None) or exc
                    raise ValueError(f"cannot create the task account {name!r} with "
                                     f"useradd: {str(detail).strip()}") from None
    return TaskUser.lookup(name)


class TaskAccounts:
    """The account policy of one server (see the module docstring)."""

    def __init__(self, task_user: str = "",
                 task_users: dict[str, str] | None = None,
                 allow_shared_task_user: bool = False, euid: int | None = None):
        """``task_user`` empty: an account per user (:func:`account_for`); else the one
        account every user's tasks run as."""
        self.euid = os.geteuid() if euid is None else euid
        self.allow_shared = allow_shared_task_user
        self.switching = self.euid == 0
        self.per_user = self.switching and not task_user
        self._default: TaskUser | None = None
        self._mapped: dict[str, TaskUser] = {}
        self._own: dict[str, TaskUser] = {}  # per-user accounts met so far
        if self.switching:
            self._default = TaskUser.lookup(task_user) if task_user else None
            self._mapped = {user: TaskUser.lookup(name)
                            for user, name in (task_users or {}).items()}
        elif task_users:
            raise ValueError("--task-user-for needs a server running as root (only root can "
                             "start a task as another account)")

    def for_owner(self, owner: str) -> TaskUser | None:
        """The account tasks of Everest user ``owner`` run as; None: the server's own.
        A per-user account is created the first time (``ValueError`` if it cannot be)."""
        if not self.switching:
            return None
        found = self._mapped.get(owner) or self._default or self._own.get(owner)
        if found is None:
            found = self._own[owner] = ensure_account(account_for(owner))
        return found

    def known(self, owner: str) -> bool:
        """True when :meth:`for_owner` answers at once (no account to look up or create)."""
        return not self.per_user or owner in self._own or owner in self._mapped

    def check(self, user_count: int, server_account: str) -> None:
        """Refuse (``ValueError``) a server whose users' tasks would all run as the server's
        own account, unless the admin accepted that."""
        if self.switching or user_count <= 1 or self.allow_shared:
            return
        raise ValueError(
            f"this server has {user_count} users but runs as {server_account}, which cannot "
            f"start tasks as another account: every user's tasks would run as "
            f"{server_account} and could read this server's database, every user's files "
            "and the session relay's state. Run it as root (tasks then run as --task-user), "
            "or pass --allow-shared-task-user to accept this.")

    def reachable(self, folder: Path) -> bool:
        """True when every task account can reach ``folder`` (search permission on each
        parent), which tasks need to use their folder's absolute path."""
        users = {u for u in (self._default, *self._mapped.values()) if u is not None}
        if self.per_user:
            users.add(ANY_ACCOUNT)
        try:
            return not any(blocking(folder, user) for user in users)
        except OSError:
            return False


def blocking(folder: Path, user: TaskUser) -> list[Path]:
    """The folders among ``folder`` and its parents that ``user`` may not search (pass
    through), outermost first; ``OSError`` when one of them does not exist."""
    found = []
    for parent in [*reversed(folder.parents), folder]:
        st = parent.stat()
        if not (st.st_mode & stat.S_IXOTH or st.st_uid == user.uid and
                st.st_mode & stat.S_IXUSR or st.st_gid == user.gid and
                st.st_mode & stat.S_IXGRP):
            found.append(parent)
    return found


def task_python_folders() -> list[Path]:
    """The folders a local task must reach to run Python as the server runs it (a task's
    ``python3`` is this process's ``sys.executable``, see everest_local/staging.py): the
    interpreter's folder (as named and as linked to), its standard library and
    site-packages, and the folder this project is imported from (the source checkout of an
    editable install, whose modules the session's kernels import)."""
    named = [Path(sys.executable).parent,
             *(Path(sysconfig.get_path(key)) for key in ("stdlib", "platstdlib", "purelib",
                                                           "platlib")),
             Path(__file__).resolve().parents[1]]
    folders = [*named, *(Path(os.path.realpath(folder)) for folder in named)]
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


def prepare_for_root(task_user: str, say: Callable[[str], None]) -> None:
    """Make this machine ready for a root server to run local tasks as ``task_user`` (empty:
    as per-user accounts the server creates itself): what the embedded default does for
    someone running ``everest-jupyter launch`` as root (an admin's ``everest-jupyter
    server`` changes nothing: it refuses with :meth:`TaskUser.lookup`'s message instead).

    - A missing ``task_user`` is created: a system account with no home and no login shell
      (``useradd`` with an argument list, never a shell).
    - Each folder on the way to :func:`task_python_folders` that the account may not pass
      through gets search permission for others (o+x: pass through, never list or read);
      no other mode changes.

    ``say`` gets one line per kind of change made, naming it. Raises ``ValueError`` with
    the reason when the account cannot be created, ``OSError`` when a mode cannot change.
    """
    if task_user:
        try:
            pwd.getpwnam(task_user)
            created = False
        except KeyError:
            created = True
        user = ensure_account(task_user)
        if created:
            say(f"created the unprivileged account {task_user} that session tasks run as")
    else:
        user = ANY_ACCOUNT
    who = task_user or "the task accounts"
    changed: list[Path] = []
    for folder in task_python_folders():
        for parent in blocking(folder, user):
            if parent not in changed:
                os.chmod(parent, stat.S_IMODE(parent.stat().st_mode) | stat.S_IXOTH)
                changed.append(parent)
    if changed:
        say(f"let {who} pass through {', '.join(map(str, changed))} (o+x: search "
            "only, not read) so that session tasks can run Python and this project")


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")


def switch_prefix(uid: int, gid: int) -> list[str] | None:
    """The command prefix that runs what follows as ``uid``/``gid`` with no supplementary
    groups (util-linux ``setpriv``), or None where there is no ``setpriv``.

    Why not :class:`subprocess.Popen`'s ``user=``: Python forks the whole server for that
    (``vfork`` is off when the child changes account), which costs tens of milliseconds per
    task on a loaded machine; a server that only execs this prefix is started with ``vfork``
    and the account changes after the ``exec``, before any of the task's code runs."""
    setpriv = _setpriv()
    if setpriv is None:
        return None
    return [setpriv, f"--reuid={int(uid)}", f"--regid={int(gid)}", "--clear-groups", "--"]


def hand_over(task_dir: Path, user: TaskUser) -> None:
    """Give a staged task folder to ``user``: owned by it, readable by it alone."""
    for root, dirs, files in os.walk(task_dir):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.uid, user.gid)
    os.chown(task_dir, user.uid, user.gid)
    os.chmod(task_dir, 0o700)
    os.chmod(task_dir / "work", 0o700)


def tasks_root(data_dir: Path, accounts: TaskAccounts) -> Path:
    """Where task folders live: ``<data>/tasks``, unless the task accounts cannot reach it
    (a parent of the data directory others may not search); then a folder of this data
    directory under ``/var/tmp/everest-jupyter`` (only root writes there, anyone may pass).
    Created with mode 0711: passable, not listable."""
    root = data_dir / "tasks"
    if accounts.switching and not accounts.reachable(data_dir.parent):
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        base = Path("/var/tmp/everest-jupyter")
        for folder in (base, base / digest):
            folder.mkdir(mode=0o711, exist_ok=True)
            os.chmod(folder, 0o711)
        root = base / digest / "tasks"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711 if accounts.switching else 0o700)
    return root


def release_tasks_root(root: Path, data_dir: Path) -> None:
    """After a clean stop: remove a task-folder root kept outside the data directory (see
    :func:`tasks_root`) once nothing is left in it."""
    if data_dir in root.parents:
        return
    for folder in (root, root.parent):
        try:
            folder.rmdir()
        except OSError:
            return
