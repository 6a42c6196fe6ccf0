"""A task's work folder as the server reads it after the task ran: opened once beneath the
task folder the server holds, and never by path again.

A task owns its folder and may have replaced anything in it: ``work`` by a link to another
folder (the server's, another user's running task's), an output by a link, a FIFO that
would block a reader, a hard link to a file it does not own. So every step here is an
``openat`` relative to a directory descriptor already held, with ``O_NOFOLLOW`` (and
``O_DIRECTORY`` for folders): a link anywhere on the way is refused, never followed. A file
output is moved out by renaming its directory entry (``renameat``, which moves a link
itself, never its target) and kept only if what arrived is the very file that was opened
and checked; a file with other names is copied from the open descriptor instead.

The task folder itself (``<tasks>/<task-id>``) sits in a folder only the server may write,
so the task cannot replace *it*; everything below it is the task's.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under an output's name must not block the server
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LINK = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)  # what O_NOFOLLOW says of a link
WORK = "work"


class UnsafeFolder(Exception):
    """The task replaced its work folder (or part of the way to it) with something the
    server will not enter; the message says what, for the job's info."""


class UnsafeFile(Exception):
    """One output is a link or is reached through one; the message names it."""


@dataclass
class Opened:
    """A regular file of the work folder, open: its folder's descriptor, its name there,
    its own descriptor and what ``fstat`` said of it when it was opened."""

    dir_fd: int
    name: str
    fd: int
    stat: os.stat_result

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


def read_small(folder: Path, name: str, limit: int = 4096) -> bytes | None:
    """A small record file (``exit``, ``pid``) of a task folder, or None if absent; a link
    or anything but a regular file reads as absent."""
    try:
        fd = os.open(folder / name, _FILE)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


class WorkDir:
    """``<task-dir>/work``, held open (see the module docstring). A missing work folder is
    an empty one; a work folder that is a link or a file raises :class:`UnsafeFolder`."""

    def __init__(self, task_dir: Path):
        self.fd: int | None = None
        try:
            top = os.open(task_dir, _DIR)
        except FileNotFoundError:
            return
        try:
            self.fd = os.open(WORK, _DIR, dir_fd=top)
        except FileNotFoundError:
            self.fd = None
        except OSError as exc:
            if exc.errno not in _LINK:
                raise
            raise UnsafeFolder(_replaced(top)) from None
        finally:
            os.close(top)

    def __enter__(self) -> WorkDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _walk(self, parts: list[str], rel: str) -> int | None:
        """A new descriptor of the folder ``parts`` lead to, None if one is missing."""
        assert self.fd is not None
        fd = os.dup(self.fd)
        for part in parts:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                return None
            except OSError as exc:
                os.close(fd)
                if exc.errno in _LINK:
                    raise UnsafeFile(f"output file {rel} is reached through a link or a "
                                     f"non-folder ({part}); links are not followed") from None
                raise
            os.close(fd)
            fd = nxt
        return fd

    def open(self, rel: str) -> Opened | None:
        """The regular file at ``rel`` (relative, ``/``-separated), open; None if there is
        no regular file there. Raises :class:`UnsafeFile` for a link or a way out."""
        parts = _parts(rel)
        if self.fd is None or not parts:
            return None
        dir_fd = self._walk(parts[:-1], rel)
        if dir_fd is None:
            return None
        try:
            fd = os.open(parts[-1], _FILE, dir_fd=dir_fd)
        except FileNotFoundError:
            os.close(dir_fd)
            return None
        except OSError as exc:
            os.close(dir_fd)
            if exc.errno in _LINK:
                raise UnsafeFile(f"output file {rel} is a link; links are not followed out "
                                 "of a task's folder") from None
            if exc.errno in (errno.ENXIO, errno.EACCES, errno.EISDIR):
                return None  # a socket, a folder, something that is not a file
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            os.close(dir_fd)
            return None
        return Opened(dir_fd, parts[-1], fd, st)

    def glob(self, pattern: str) -> list[str]:
        """Relative names matching ``pattern`` as :func:`glob.glob` would match them
        (``*``/``?``/``[]`` per component, hidden names only for a pattern starting with
        ``.``), found without entering a linked folder; sorted."""
        parts = _parts(pattern)
        if self.fd is None or not parts:
            return []
        found: list[str] = []
        self._glob(os.dup(self.fd), "", parts, found)
        return sorted(found)

    def _glob(self, fd: int, prefix: str, parts: list[str], found: list[str]) -> None:
        try:
            head, rest = parts[0], parts[1:]
            if glob_magic(head):
                names = [n for n in os.listdir(fd) if fnmatch.fnmatchcase(n, head)
                         and (head.startswith(".") or not n.startswith("."))]
            else:
                names = [head]
            for name in sorted(names):
                if not rest:
                    found.append(prefix + name)
                    continue
                try:
                    sub = os.open(name, _DIR, dir_fd=fd)
                except OSError:
                    continue  # missing, a file, or a link: not entered
                self._glob(sub, f"{prefix}{name}/", rest, found)
        finally:
            os.close(fd)


def read_text(opened: Opened, limit: int) -> bytes:
    """Up to ``limit`` bytes of an opened file, from its start."""
    os.lseek(opened.fd, 0, os.SEEK_SET)
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(opened.fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def move_out(opened: Opened, dest: Path) -> None:
    """Put the opened file at ``dest`` (a new name in a folder of the server's): its entry
    renamed when it is the file's only name, else (or across file systems) copied from the
    descriptor. Raises :class:`UnsafeFile` if the entry was swapped after it was opened."""
    st = opened.stat
    if st.st_nlink == 1:
        try:
            os.rename(opened.name, dest, src_dir_fd=opened.dir_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            now = os.lstat(dest)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                dest.unlink()
                raise UnsafeFile(f"output file {opened.name} was replaced while it was "
                                 "collected")
            return
    _copy_from(opened, dest)


def copy_tree(src: Path, dest: Path) -> None:
    """Copy folder ``src`` (a task's folder elsewhere on this machine, e.g. a Slurm
    ``workdir``) into the new folder ``dest``: folders and regular files only, each opened
    beneath its parent without following links; links, FIFOs and devices are left behind.
    Raises :class:`UnsafeFolder` if ``src`` itself is a link or not a folder."""
    try:
        fd = os.open(src, _DIR)
    except OSError as exc:
        if exc.errno in _LINK:
            raise UnsafeFolder(f"its work folder {src} was replaced by a link or a file; "
                               "nothing was read from it") from None
        raise
    dest.mkdir(mode=0o700)
    _copy_into(fd, dest)


def _copy_into(fd: int, dest: Path) -> None:
    try:
        for name in os.listdir(fd):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, _DIR, dir_fd=fd)
                except OSError:
                    continue  # swapped for a link meanwhile: left behind
                (dest / name).mkdir(mode=0o700)
                _copy_into(sub, dest / name)
            elif stat.S_ISREG(st.st_mode):
                try:
                    one = os.open(name, _FILE, dir_fd=fd)
                except OSError:
                    continue
                opened = Opened(os.dup(fd), name, one, os.fstat(one))
                try:
                    if stat.S_ISREG(opened.stat.st_mode):
                        _copy_from(opened, dest / name)
                finally:
                    opened.close()
    finally:
        os.close(fd)


def _copy_from(opened: Opened, dest: Path) -> None:
    os.lseek(opened.fd, 0, os.SEEK_SET)
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    try:
        with open(out, "wb", closefd=False) as sink, \
                open(opened.fd, "rb", closefd=False) as source:
            shutil.copyfileobj(source, sink, 1 << 20)
    finally:
        os.close(out)


def put_tree(src: Path, dest: Path, uid: int | None = None, gid: int | None = None) -> None:
    """Copy the server's own folder ``src`` to the new folder ``dest`` in a place another
    account may write (a Slurm ``workdir`` of the task's user), giving everything to
    ``uid``/``gid`` when given. ``dest`` is created here and every write goes through a
    descriptor of it: if that account swaps ``dest`` or a folder in it for a link meanwhile,
    nothing is written, chowned or chmodded through the link. Modes are kept; links in
    ``src`` (it has none) would be left behind. Raises FileExistsError if ``dest`` exists."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(dest, 0o700)
    _put_into(src, os.open(dest, _DIR), uid, gid, os.stat(src).st_mode)


def _put_into(src: Path, fd: int, uid: int | None, gid: int | None, mode: int) -> None:
    try:
        if uid is not None:
            os.fchown(fd, uid, -1 if gid is None else gid)
        os.fchmod(fd, stat.S_IMODE(mode))
        for entry in os.scandir(src):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(entry.name, 0o700, dir_fd=fd)
                _put_into(Path(entry.path), os.open(entry.name, _DIR, dir_fd=fd), uid, gid,
                          st.st_mode)
            elif stat.S_ISREG(st.st_mode):
                out = os.open(entry.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o600, dir_fd=fd)
                try:
                    with open(entry.path, "rb") as source, open(out, "wb", closefd=False) as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                    if uid is not None:
                        os.fchown(out, uid, -1 if gid is None else gid)
                    os.fchmod(out, stat.S_IMODE(st.st_mode))
                finally:
                    os.close(out)
    finally:
        os.close(fd)


def glob_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if rel.startswith("/") or ".." in parts:
        raise UnsafeFile(f"output file {rel} would be outside the task's work folder")
    return parts


def _replaced(top: int) -> str:
    try:
        target = os.readlink(WORK, dir_fd=top)
    except OSError:
        return "its work folder was replaced by something that is not a folder; nothing " \
               "was read from it"
    return (f"its work folder was replaced by a link (to {target}); the server does not "
            "follow links out of a task's folder and read nothing from it")
