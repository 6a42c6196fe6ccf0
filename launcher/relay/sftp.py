"""The relay's SFTP server: a session's runner restores and saves its workspace through it.

It runs on the runner's own SSH connection (the tunnel's, or one like it; over the TCP port
or inside the WebSocket) as the ``sftp`` subsystem, and serves exactly one folder: the
working copy of the workspace the session opened (:mod:`launcher.relay.workspaces`), or its
read-only copy. asyncssh's :class:`asyncssh.SFTPServer` maps client paths into a chroot but
follows links that already exist; this subclass never does:

- every path is normalised under the root (``..`` stops at it) and no component before the
  last may be a link; the last one is never followed either (``stat`` answers as ``lstat``,
  ``open`` uses ``O_NOFOLLOW``, ``realpath`` does not resolve, ``readlink`` gives the link's
  text as stored). Links are stored as links, whatever they point at, and only the runner
  ever follows them, on its own machine.
- files are never changed in place while a snapshot shares them: opening one with more than
  one link for writing gives the writer a fresh copy first, so snapshots (hard links of the
  working copy) stay as they were cut.
- writes past the size limit of a file or the owner's quota fail (``SFTP_FAILURE`` with the
  reason), and the file being written is removed when closed: nothing half-written stays.
- a read-only session may only read; hard links, ownership changes and anything outside the
  root are refused.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.stream import SSHServerStreamSession

from launcher.relay.workspaces import OpenWorkspace, QuotaExceeded


@dataclass
class SFTPGrant:
    """What one session's runner may reach over SFTP: ``workspace`` (its root, read-only or
    not), the size limit per file (``max_file``, 0: none), and ``quota_left()``: bytes the
    owner may still add (None: no quota). ``on_change()`` is called after the working copy
    changed (at most every ``note_every`` seconds, and once more after the last change)."""

    workspace: OpenWorkspace
    max_file: int
    quota_left: Callable[[], int | None]
    on_change: Callable[[], None]
    note_every: float = 2.0


class _Written:
    """An open file and what the SFTP server must remember of it."""

    def __init__(self, file: Any, path: str, writing: bool):
        self.file = file
        self.path = path
        self.writing = writing
        self.failed = False
        self.size = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)  # seek (asyncssh's range requests), tell, ...


def _denied(why: str) -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied(why)


class WorkspaceSFTPServer(asyncssh.SFTPServer):
    """One runner's SFTP channel onto its workspace (see the module docstring)."""

    def __init__(self, chan: asyncssh.SSHServerChannel, grant: SFTPGrant):
        self._grant = grant
        self._root = os.path.realpath(grant.workspace.root)
        super().__init__(chan, chroot=self._root.encode())
        self._read_only = grant.workspace.read_only
        self._last_note = 0.0
        self._pending: Any = None
        self._quota_base: int | None = None
        self._quota_checked = 0.0
        self._added = 0

    # -- paths --------------------------------------------------------------------------

    def _local(self, path: bytes, *, follow_last: bool = False) -> str:
        """The local path of a client path; SFTPNoSuchFile/PermissionDenied when it has NUL,
        or passes through a link (or, with ``follow_last``, is one)."""
        if b"\x00" in path:
            raise asyncssh.SFTPNoSuchFile("a path with NUL")
        norm = posixpath.normpath(posixpath.join(b"/", path)).lstrip(b"/")
        parts = [p for p in norm.split(b"/") if p]
        local = self._root
        for i, part in enumerate(parts):
            local = os.path.join(local, os.fsdecode(part))
            last = i == len(parts) - 1
            if last and not follow_last:
                break
            try:
                st = os.lstat(local)
            except FileNotFoundError:
                if last:
                    break
                raise asyncssh.SFTPNoSuchFile("no such folder") from None
            if stat.S_ISLNK(st.st_mode):
                raise _denied("links are stored, never followed, in a workspace")
            if not last and not stat.S_ISDIR(st.st_mode):
                raise asyncssh.SFTPNoSuchFile("not a folder")
        return local

    def _writable(self) -> None:
        if self._read_only:
            raise _denied("this session opened its workspace read-only: nothing is saved")

    def map_path(self, path: bytes) -> bytes:
        return os.fsencode(self._local(path, follow_last=True))

    def realpath(self, path: bytes) -> bytes:
        norm = posixpath.normpath(posixpath.join(b"/", path))
        return b"/" + norm.lstrip(b"/")

    # -- changes noted ------------------------------------------------------------------

    def _changed(self) -> None:
        now = time.monotonic()
        if now - self._last_note >= self._grant.note_every:
            self._last_note = now
            self._grant.on_change()
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(
                self._grant.note_every, self._note_pending)

    def _note_pending(self) -> None:
        self._pending = None
        self._last_note = time.monotonic()
        self._grant.on_change()

    def _check_quota(self, more: int) -> None:
        now = time.monotonic()
        if self._quota_base is None or now - self._quota_checked > 5.0:
            self._quota_base = self._grant.quota_left()
            self._quota_checked = now
            self._added = 0
        if self._quota_base is not None and self._added + more > self._quota_base:
            raise QuotaExceeded("quota exceeded: your workspaces at the relay are full; "
                                "free space (delete a workspace) or save less")
        self._added += more

    # -- files ----------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        local = self._local(path)
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND |
                                 asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC))
        if writing:
            self._writable()
        flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        if writing:
            flags |= os.O_RDWR if pflags & asyncssh.FXF_READ else os.O_WRONLY
            flags |= os.O_CREAT if pflags & asyncssh.FXF_CREAT else 0
            flags |= os.O_EXCL if pflags & asyncssh.FXF_EXCL else 0
            flags |= os.O_APPEND if pflags & asyncssh.FXF_APPEND else 0
            try:
                st = os.lstat(local)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and \
                    not pflags & asyncssh.FXF_EXCL:
                # a snapshot shares this file: the writer gets its own copy
                if pflags & asyncssh.FXF_TRUNC:
                    os.unlink(local)
                    flags |= os.O_CREAT
                else:
                    try:
                        self._check_quota(st.st_size)
                    except QuotaExceeded as exc:
                        raise asyncssh.SFTPFailure(exc.message) from None
                    tmp = local + ".everest-copy"
                    shutil.copyfile(local, tmp, follow_symlinks=False)
                    os.replace(tmp, local)
            elif pflags & asyncssh.FXF_TRUNC:
                flags |= os.O_TRUNC
        else:
            flags |= os.O_RDONLY
        perms = 0o600 if attrs.permissions is None else (attrs.permissions & 0o700) | 0o600
        try:
            fd = os.open(local, flags, perms)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _denied("links are stored, never followed, in a workspace") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode) and writing:
            os.close(fd)
            raise _denied("only regular files can be written")
        handle = _Written(os.fdopen(fd, "r+b" if flags & os.O_RDWR else
                                    ("wb" if writing else "rb"), buffering=0),
                          local, writing)
        if writing:
            handle.size = os.fstat(fd).st_size
        return handle

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        handle: _Written = file_obj  # type: ignore[assignment]
        return os.pread(handle.fileno(), size, offset)

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        handle: _Written = file_obj  # type: ignore[assignment]
        end = offset + len(data)
        try:
            if self._grant.max_file and end > self._grant.max_file:
                raise QuotaExceeded(f"file too large: over the limit of {self._grant.max_file} "
                                    "bytes per file in a workspace")
            if end > handle.size:
                self._check_quota(end - handle.size)
        except QuotaExceeded as exc:
            handle.failed = True
            raise asyncssh.SFTPFailure(exc.message) from None
        written = os.pwrite(handle.fileno(), data, offset)
        handle.size = max(handle.size, offset + written)
        return written

    def close(self, file_obj: object) -> None:
        handle: _Written = file_obj  # type: ignore[assignment]
        handle.file.close()
        if handle.failed:
            with_suppressed_unlink(handle.path)
        elif handle.writing:
            self._changed()

    def fstat(self, file_obj: object) -> os.stat_result:
        return os.fstat(file_obj.fileno())  # type: ignore[attr-defined]

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        self._writable()
        self._setstat(file_obj.fileno(), attrs)  # type: ignore[attr-defined]

    def fsync(self, file_obj: object) -> None:
        os.fsync(file_obj.fileno())  # type: ignore[attr-defined]

    @staticmethod
    def _setstat(target: int | str, attrs: asyncssh.SFTPAttrs) -> None:
        """Permissions (owner bits kept readable and writable) and times only; never
        ownership, and never through a link."""
        if attrs.uid is not None or attrs.gid is not None:
            raise _denied("ownership cannot be changed in a workspace")
        if attrs.size is not None:
            raise asyncssh.SFTPOpUnsupported("truncate by opening the file anew")
        follow = isinstance(target, int)
        if attrs.permissions is not None:
            if not follow and os.path.islink(target):
                raise _denied("links have no permissions")
            os.chmod(target, (attrs.permissions & 0o7777 & ~0o7000) | 0o600)
        if attrs.atime is not None and attrs.mtime is not None:
            os.utime(target, (attrs.atime, attrs.mtime), follow_symlinks=follow)

    # -- names --------------------------------------------------------------------------

    def stat(self, path: bytes) -> os.stat_result:
        return os.lstat(self._local(path))

    def lstat(self, path: bytes) -> os.stat_result:
        return os.lstat(self._local(path))

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._writable()
        self._setstat(self._local(path), attrs)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self.setstat(path, attrs)

    def readlink(self, path: bytes) -> bytes:
        return os.fsencode(os.readlink(self._local(path)))

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._writable()
        if b"\x00" in oldpath:
            raise asyncssh.SFTPFailure("a link with NUL")
        os.symlink(os.fsdecode(oldpath), self._local(newpath))
        self._changed()

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("no hard links in a workspace")

    def remove(self, path: bytes) -> None:
        self._writable()
        local = self._local(path)
        if os.path.isdir(local) and not os.path.islink(local):
            raise asyncssh.SFTPFailure("a folder: use rmdir")
        os.remove(local)
        self._changed()

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._writable()
        os.mkdir(self._local(path), 0o700)
        self._changed()

    def rmdir(self, path: bytes) -> None:
        self._writable()
        os.rmdir(self._local(path))
        self._changed()

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._writable()
        old, new = self._local(oldpath), self._local(newpath)
        if os.path.lexists(new):
            raise asyncssh.SFTPFailure("the new name exists")
        os.rename(old, new)
        self._changed()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._writable()
        os.replace(self._local(oldpath), self._local(newpath))
        self._changed()

    def exit(self) -> None:
        if self._pending is not None:  # the last change is noted before the channel goes
            self._pending.cancel()
            self._note_pending()


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def sftp_session(grant: SFTPGrant) -> SSHServerStreamSession:
    """An SSH session that serves only the ``sftp`` subsystem on ``grant``'s workspace
    (no shell, no command, no other subsystem, no scp)."""
    return SSHServerStreamSession(None, lambda chan: WorkspaceSFTPServer(chan, grant),
                                  sftp_version=3)
