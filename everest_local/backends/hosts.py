"""Where task folders live and commands run: this machine (:class:`LocalHost`) or an SSH
login (:class:`SSHHost`, asyncssh with retries)."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from everest_local.backends.base import BackendError
from everest_local.workdir import UnsafeFolder, copy_tree, put_tree, read_small

log = logging.getLogger(__name__)


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
        """Copy folder ``remote`` to ``local``, replacing what was there: folders and
        regular files only, links never followed nor copied. Raises
        :class:`~everest_local.workdir.UnsafeFolder` if ``remote`` is not a folder."""

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
        if self.owner:
            import pwd

            entry = pwd.getpwnam(self.owner)
            put_tree(src, dest, entry.pw_uid, entry.pw_gid)
        else:
            put_tree(src, dest)

    async def get_dir(self, remote: str, local: Path) -> None:
        await asyncio.to_thread(self._get_dir, Path(remote), local)

    @staticmethod
    def _get_dir(remote: Path, local: Path) -> None:
        shutil.rmtree(local, ignore_errors=True)
        copy_tree(remote, local)

    async def read(self, path: str) -> bytes | None:
        # a task's record file: a link is not followed, a FIFO does not block the server
        where = Path(path)
        return read_small(where.parent, where.name)

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
        import asyncssh

        async def fetch(sftp: Any, there: str, here: Path) -> None:
            here.mkdir(mode=0o700)
            async for entry in sftp.scandir(there):
                name = entry.filename
                if name in (".", "..") or "/" in name or "\0" in name:
                    continue
                kind = entry.attrs.type
                if kind == asyncssh.FILEXFER_TYPE_DIRECTORY:
                    await fetch(sftp, f"{there}/{name}", here / name)
                elif kind == asyncssh.FILEXFER_TYPE_REGULAR:
                    # a file swapped for a link since the listing is not followed either:
                    # asyncssh copies a link as a link (refusing one that leads out)
                    await sftp.get(f"{there}/{name}", str(here / name), preserve=False,
                                   follow_symlinks=False)

        async def op(_: Any, sftp: Any) -> None:
            attrs = await sftp.lstat(remote)
            if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
                raise UnsafeFolder(f"its work folder on {self.options['host']} was replaced "
                                   "by a link or a file; nothing was read from it")
            await asyncio.to_thread(shutil.rmtree, local, True)
            await fetch(sftp, remote, local)

        await self._retry(op)

    async def read(self, path: str) -> bytes | None:
        import asyncssh

        async def op(_: Any, sftp: Any) -> bytes | None:
            try:
                # a FIFO put there by the task would hang the host's SFTP server: look first
                if (await sftp.lstat(path)).type != asyncssh.FILEXFER_TYPE_REGULAR:
                    return None
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


