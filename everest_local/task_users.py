"""Which OS account runs each user's tasks, so that a task cannot read the server's state.

A task is a user's code. Run as the server's own account it could read the server's
database (every user's jobs, every token's hash), every user's uploads and outputs, and the
session relay's state. So:

- **A server running as root** never runs a task as root or as itself: tasks run as the
  unprivileged ``task_user`` (default ``everest-task``), or as the account
  ``task_users`` maps their Everest user to. Each task's folder is handed to that account
  (mode 0700), everything else under the data directory stays root's (0700/0600).
- **A server running as an ordinary account** cannot switch accounts; its tasks run as that
  account. That is right for the embedded default (one person, their own server). With
  more than one user it is not: the server says so and refuses to start unless the admin
  accepts it (``allow_shared_task_user``).

Mapped accounts give isolation between users' running tasks too; with the single default
account, tasks of different users share one OS account (each other's running processes
and work folders are reachable to a task that looks), while the server's state is not.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TASK_USER = "everest-task"
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


class TaskAccounts:
    """The account policy of one server (see the module docstring)."""

    def __init__(self, task_user: str = DEFAULT_TASK_USER,
                 task_users: dict[str, str] | None = None,
                 allow_shared_task_user: bool = False, euid: int | None = None):
        self.euid = os.geteuid() if euid is None else euid
        self.allow_shared = allow_shared_task_user
        self.switching = self.euid == 0
        self._default: TaskUser | None = None
        self._mapped: dict[str, TaskUser] = {}
        if self.switching:
            self._default = TaskUser.lookup(task_user)
            self._mapped = {user: TaskUser.lookup(name)
                            for user, name in (task_users or {}).items()}
        elif task_users:
            raise ValueError("--task-user-for needs a server running as root (only root can "
                             "start a task as another account)")

    def for_owner(self, owner: str) -> TaskUser | None:
        """The account tasks of Everest user ``owner`` run as; None: the server's own."""
        if not self.switching:
            return None
        return self._mapped.get(owner, self._default)

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
    """Make this machine ready for a root server to run local tasks as ``task_user``: what
    the embedded default does for someone running ``everest-jupyter launch`` as root (an
    admin's ``everest-jupyter server`` changes nothing: it refuses with
    :meth:`TaskUser.lookup`'s message instead).

    - A missing account is created: a system account with no home and no login shell
      (``useradd`` with an argument list, never a shell).
    - Each folder on the way to :func:`task_python_folders` that the account may not pass
      through gets search permission for others (o+x: pass through, never list or read);
      no other mode changes.

    ``say`` gets one line per kind of change made, naming it. Raises ``ValueError`` with
    the reason when the account cannot be created, ``OSError`` when a mode cannot change.
    """
    try:
        pwd.getpwnam(task_user)
    except KeyError:
        if not _ACCOUNT_NAME.match(task_user):
            raise ValueError(f"cannot create the task account {task_user!r}: not a valid "
                             "account name (lower-case letters, digits, _ and -)") from None
        try:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", task_user],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            raise ValueError(f"cannot create the task account {task_user!r} with useradd: "
                             f"{str(detail).strip()}") from None
        say(f"created the unprivileged account {task_user} that session tasks run as")
    user = TaskUser.lookup(task_user)
    changed: list[Path] = []
    for folder in task_python_folders():
        for parent in blocking(folder, user):
            if parent not in changed:
                os.chmod(parent, stat.S_IMODE(parent.stat().st_mode) | stat.S_IXOTH)
                changed.append(parent)
    if changed:
        say(f"let {task_user} pass through {', '.join(map(str, changed))} (o+x: search "
            "only, not read) so that session tasks can run Python and this project")


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
