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
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TASK_USER = "everest-task"
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
        for parent in [folder, *folder.parents]:
            try:
                st = parent.stat()
            except OSError:
                return False
            for user in users:
                if not (st.st_mode & stat.S_IXOTH or st.st_uid == user.uid and
                        st.st_mode & stat.S_IXUSR or st.st_gid == user.gid and
                        st.st_mode & stat.S_IXGRP):
                    return False
        return True


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
