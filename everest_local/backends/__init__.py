"""Executor backends: how a task runs on a resource other than this machine's processes.

The executor stages every task into a local folder ``<task-dir>/work`` (inputs, app files)
and builds its argument list; a backend moves that folder to where the task runs, starts
it, waits for it, signals it and brings the work folder back for the outputs to be read.
Local tasks stay on the executor's own fast path (``everest_local.processes``); each other
kind has a module here: :mod:`.docker`, :mod:`.ssh`, :mod:`.slurm`.

Restart safety rests on the **handle**: a small JSON-able dict naming the remote thing (a
container name, a remote folder, a Slurm job name). :meth:`Backend.handle_for` computes it
from the task id alone, the executor stores it *before* :meth:`Backend.launch`, and after a
restart :meth:`Backend.started` tells whether the launch got as far as starting the task —
if so the task is re-adopted (:meth:`Backend.wait` again), if not it is cleaned up and queued
again. So a task is never lost and never started twice.

Every backend runs the same fixed wrapper as local tasks (``processes.WRAPPER``): the task's
arguments travel in a NUL-separated ``argv`` file and reach the program through
``xargs -0``, never through a shell's parser. The wrapper records ``pid`` and ``exit``
in the task folder, which is how an end is seen even by a server that was restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from everest_app.states import JobState
from everest_local.resources import Resource

log = logging.getLogger(__name__)

ARGV_FILE = "argv"
PGID_FILE = "pgid"

ENV_FILE = "env.sh"

# `sh -c DETACHED sh WRAPPER` run in <task-dir>/work: becomes a session leader, records its
# process group, takes the task's variables from ../env.sh, then runs the wrapper with the
# arguments read from ../argv by xargs.
DETACHED = ('echo "$$" > ../pgid; . ../env.sh; exec xargs -0 -x /bin/sh -c "$0" sh '
            '"${PWD%/work}" < ../argv')

Report = Callable[[JobState, str | None], None]
"""``report(state, why)``: a backend tells the executor a task is SCHEDULED or RUNNING."""


class BackendError(Exception):
    """The resource refused or failed an operation; the message says what and where."""


@dataclass
class TaskSpec:
    """What a backend needs to run one task."""

    task_id: str
    dir: Path  # the local task folder; its ``work`` is staged
    argv: list[str]
    env: dict[str, str]
    time_limit: float | None = None
    requirements: dict[str, Any] = field(default_factory=dict)
    image: str | None = None

    @property
    def work(self) -> Path:
        return self.dir / "work"


def write_argv(task_dir: Path, argv: list[str]) -> None:
    """The NUL-separated argument file the wrapper's ``xargs -0`` reads."""
    if any("\0" in a for a in argv):
        raise ValueError("an argument contains a NUL byte")
    (task_dir / ARGV_FILE).write_bytes(b"".join(a.encode() + b"\0" for a in argv))


def write_env(task_dir: Path, env: dict[str, str], name: str = ENV_FILE,
              then: str = "") -> None:
    """A shell file exporting the task's variables (quoted; readable by its owner only:
    it holds the task's token, which must not show in a command line on the host)."""
    lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    path = task_dir / name
    path.write_text("#!/bin/sh\n" + lines + then)
    path.chmod(0o700)


def parse_status(data: bytes | str | None) -> int | None:
    """An ``exit`` file's content as a status, None until it is completely written."""
    if data is None:
        return None
    text = data.decode() if isinstance(data, bytes) else data
    if not text.endswith("\n"):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def task_env(spec: TaskSpec) -> dict[str, str]:
    """The Everest variables a task gets wherever it runs (not this server's environment)."""
    return {k: v for k, v in spec.env.items() if k.startswith("EVEREST_")}


def requirement(spec: TaskSpec, name: str) -> float | None:
    """``resourceRequirements.<name>.defaultValue`` as a positive number, else None."""
    value = (spec.requirements.get(name) or {}).get("defaultValue")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return value


class Backend(ABC):
    """Runs tasks on one resource (see the module docstring for the contract)."""

    poll_interval = 0.2

    def __init__(self, resource: Resource):
        self.resource = resource

    @abstractmethod
    def handle_for(self, spec: TaskSpec) -> dict[str, Any]:
        """The task's handle, from its id alone (stored before :meth:`launch`)."""

    @abstractmethod
    async def launch(self, spec: TaskSpec, handle: dict[str, Any]) -> dict[str, Any]:
        """Move the work folder there and start the task; return the handle with what
        became known (a Slurm job id). Raises BackendError or OSError if it cannot."""

    @abstractmethod
    async def started(self, handle: dict[str, Any]) -> bool:
        """After a restart: True if the task was started (it may have ended since)."""

    @abstractmethod
    async def wait(self, handle: dict[str, Any], report: Report) -> tuple[int | None, str]:
        """Wait until the task ends; its exit status (None if it left none) and a word on
        why it ended without one."""

    @abstractmethod
    async def signal(self, handle: dict[str, Any], sig: int) -> None:
        """Send ``sig`` to the task's processes (SIGKILL: end it for good)."""

    @abstractmethod
    async def collect(self, handle: dict[str, Any], task_dir: Path) -> None:
        """Bring the work folder back into ``task_dir/work`` (outputs, stdout, stderr)."""

    @abstractmethod
    async def remove(self, handle: dict[str, Any]) -> None:
        """Remove what the task left there (container, remote folder)."""

    async def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Release connections (server stop)."""


class FolderBackend(Backend):
    """A backend whose tasks live in ``handle["dir"]`` on a :class:`Host` (ssh, slurm)."""

    host: Host

    async def collect(self, handle: dict[str, Any], task_dir: Path) -> None:
        await self.host.get_dir(f"{handle['dir']}/work", task_dir / "work")

    async def remove(self, handle: dict[str, Any]) -> None:
        await self.host.rmtree(handle["dir"])

    async def close(self) -> None:
        await self.host.close()


# -- where task folders live: this machine or an SSH login -------------------------------------


class Host(ABC):
    """A machine holding task folders and running commands (argument lists)."""

    @abstractmethod
    async def run(self, argv: list[str], *, check: bool = True) -> tuple[int, str, str]:
        """Run a command; (status, stdout, stderr). ``check``: BackendError if not 0."""

    @abstractmethod
    async def put_dir(self, local: Path, remote: str) -> None:
        """Copy folder ``local`` to ``remote`` (which must not exist)."""

    @abstractmethod
    async def get_dir(self, remote: str, local: Path) -> None:
        """Copy folder ``remote`` into the folder ``local`` (merging)."""

    @abstractmethod
    async def read(self, path: str) -> bytes | None:
        """A small file's content, None if it does not exist."""

    @abstractmethod
    async def rmtree(self, path: str) -> None:
        """Remove a folder and its content (no error if absent)."""

    async def close(self) -> None:  # noqa: B027 - optional: a local host holds nothing
        """Release the connection, if any."""


class LocalHost(Host):
    """This machine; ``owner`` (user name) gets the copied folders (a task's run-as user)."""

    def __init__(self, owner: str | None = None):
        self.owner = owner

    async def run(self, argv: list[str], *, check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        code = proc.returncode or 0
        if check and code:
            raise BackendError(f"{argv[0]} failed ({code}): {err.decode(errors='replace')[-500:]}")
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    async def put_dir(self, local: Path, remote: str) -> None:
        await asyncio.to_thread(self._copy, local, Path(remote))

    def _copy(self, src: Path, dest: Path) -> None:
        shutil.copytree(src, dest, symlinks=True)
        if self.owner:
            chown_tree(dest, self.owner)

    async def get_dir(self, remote: str, local: Path) -> None:
        await asyncio.to_thread(shutil.copytree, Path(remote), local, symlinks=True,
                                dirs_exist_ok=True)

    async def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(4096)
        except OSError:
            return None

    async def rmtree(self, path: str) -> None:
        await asyncio.to_thread(shutil.rmtree, path, True)


def chown_tree(root: Path, owner: str | int, group: int | None = None) -> None:
    """Give ``root`` and everything in it to ``owner`` (a name or uid)."""
    import pwd

    if isinstance(owner, str):
        entry = pwd.getpwnam(owner)
        uid, gid = entry.pw_uid, entry.pw_gid if group is None else group
    else:
        uid, gid = owner, owner if group is None else group
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class SSHHost(Host):
    """A machine reached with asyncssh: one connection, reopened when it drops.

    ``options`` are an ssh resource's (or a Slurm login's) settings: ``host``, ``port``,
    ``user``, ``key``, and the pinned host keys (``host_keys`` lines or a ``known_hosts``
    file) — a host whose key is not pinned is refused.
    """

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self._conn: Any = None
        self._sftp: Any = None
        self._lock = asyncio.Lock()

    def _known_hosts(self) -> Any:
        import asyncssh

        if self.options.get("host_keys"):
            keys = [asyncssh.import_public_key(line) for line in self.options["host_keys"]]
            return (keys, [], [])
        return self.options["known_hosts"]

    async def _connect(self) -> tuple[Any, Any]:
        import asyncssh

        async with self._lock:
            if self._conn is None:
                opts = self.options
                keys = [opts["key"]] if opts.get("key") else ()
                self._conn = await asyncssh.connect(
                    opts["host"], port=opts.get("port", 22), username=opts["user"],
                    client_keys=keys or None, known_hosts=self._known_hosts(),
                    agent_path=None, config=(), keepalive_interval=30)
                self._sftp = await self._conn.start_sftp_client()
            return self._conn, self._sftp

    async def _retry(self, op: Callable[[Any, Any], Any]) -> Any:
        """Run ``op(conn, sftp)``; on a dropped connection reconnect and try once more."""
        import asyncssh

        for attempt in (0, 1):
            try:
                conn, sftp = await self._connect()
                return await op(conn, sftp)
            except (asyncssh.DisconnectError, asyncssh.ConnectionLost, ConnectionError,
                    BrokenPipeError, asyncssh.ChannelOpenError) as exc:
                await self._drop()
                if attempt:
                    raise BackendError(f"ssh {self.options['host']}: {exc}") from exc
                await asyncio.sleep(0.5)
            except (OSError, asyncssh.Error) as exc:
                if isinstance(exc, asyncssh.SFTPError):
                    raise
                await self._drop()
                raise BackendError(f"ssh {self.options['host']}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()

    async def run(self, argv: list[str], *, check: bool = True) -> tuple[int, str, str]:
        command = " ".join(shlex.quote(a) for a in argv)
        return await self.run_line(command, check=check)

    async def run_line(self, command: str, *, check: bool = True) -> tuple[int, str, str]:
        """Run a command line built by this package from fixed parts (never user values)."""
        async def op(conn: Any, _: Any) -> tuple[int, str, str]:
            res = await conn.run(command, check=False)
            code = res.exit_status if res.exit_status is not None else 255
            return code, str(res.stdout or ""), str(res.stderr or "")

        code, out, err = await self._retry(op)
        if check and code:
            raise BackendError(f"ssh {self.options['host']}: command failed ({code}): "
                               f"{err[-500:]}")
        return code, out, err

    async def put_dir(self, local: Path, remote: str) -> None:
        async def op(_: Any, sftp: Any) -> None:
            parent = remote.rsplit("/", 1)[0] if "/" in remote else "."
            await sftp.makedirs(parent, exist_ok=True)
            await sftp.put(str(local), remote, recurse=True, preserve=True)

        await self._retry(op)

    async def get_dir(self, remote: str, local: Path) -> None:
        async def op(_: Any, sftp: Any) -> None:
            await sftp.get(remote, str(local.parent), recurse=True, preserve=True)

        await self._retry(op)

    async def read(self, path: str) -> bytes | None:
        import asyncssh

        async def op(_: Any, sftp: Any) -> bytes | None:
            try:
                async with sftp.open(path, "rb") as f:
                    return await f.read(4096)
            except asyncssh.SFTPNoSuchFile:
                return None

        return await self._retry(op)

    async def rmtree(self, path: str) -> None:
        import asyncssh

        async def op(_: Any, sftp: Any) -> None:
            try:
                await sftp.rmtree(path)
            except asyncssh.SFTPNoSuchFile:
                pass

        await self._retry(op)

    async def close(self) -> None:
        await self._drop()


def make_backend(resource: Resource) -> Backend:
    """The backend for a resource of kind docker, ssh or slurm."""
    if resource.kind == "docker":
        from everest_local.backends.docker import DockerBackend

        return DockerBackend(resource)
    if resource.kind == "ssh":
        from everest_local.backends.ssh import SSHBackend

        return SSHBackend(resource)
    if resource.kind == "slurm":
        from everest_local.backends.slurm import SlurmBackend

        return SlurmBackend(resource)
    raise ValueError(f"no backend for kind {resource.kind!r}")
