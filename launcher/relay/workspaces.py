"""Workspaces: each user's named folders that outlive sessions, kept by the relay.

A *workspace* is ``(owner, name)``: ``owner`` is the Everest user name the relay knows the
caller by, ``name`` is ``default`` unless the user names another (a hub's servers use
``<user>`` or ``<user>/<server>``: names may have ``/``-separated parts). A session opens at
most one workspace: as its one *writer* (the runner saves into the workspace's working copy
over SFTP, :mod:`launcher.relay.sftp`), or *read-only* (the runner gets a private copy, and
nothing it does is kept). When a writer's session ends — whatever ended it — the working copy
as last saved becomes a *snapshot*; the last ``history`` snapshots are kept, each restorable
into a new session and downloadable as a zip.

:class:`WorkspaceStore` is the interface the relay's API, its SFTP server and its sessions use;
:class:`FolderWorkspaceStore` keeps everything in a folder (the relay's
``<state dir>/workspaces/``). Another backend (an S3-compatible bucket, say) implements the
same methods; see ``docs/workspaces.md``.

Errors are :class:`WorkspaceError` subclasses, each with the HTTP ``status`` an API answers
with and a message fit for the user.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import secrets
import shutil
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

DEFAULT_NAME = "default"
NAME_MAX = 200
DEFAULT_IGNORE = ".ipynb_checkpoints/\n__pycache__/\n.venv/\n"
"""What a workspace leaves out unless its ``.everestignore`` says otherwise (gitignore
syntax; the runner applies it)."""


# -- errors -------------------------------------------------------------------------------

class WorkspaceError(Exception):
    """A refused workspace operation; ``status`` is the HTTP status an API answers with."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadName(WorkspaceError):
    """A workspace name, snapshot id or path inside a workspace that is not allowed."""

    status = 400


class WorkspaceNotFound(WorkspaceError):
    """No such workspace (or snapshot) of this owner."""

    status = 404


class WorkspaceBusy(WorkspaceError):
    """The workspace is open in a live session that writes it; ``session_id`` names it."""

    status = 409

    def __init__(self, message: str, session_id: str):
        super().__init__(message)
        self.session_id = session_id


class QuotaExceeded(WorkspaceError):
    """The owner's quota, or the size limit of one file, would be exceeded."""

    status = 413


# -- names --------------------------------------------------------------------------------

def check_name(name: str | None) -> str:
    """A workspace name as given, or :data:`DEFAULT_NAME` for None/empty; :class:`BadName`
    for one with an empty, ``.`` or ``..`` part, a leading ``/``, a backslash or a control
    character, or longer than :data:`NAME_MAX`."""
    if name is None or name == "":
        return DEFAULT_NAME
    if not isinstance(name, str) or len(name) > NAME_MAX:
        raise BadName(f"a workspace name is a string of at most {NAME_MAX} characters")
    if any(ord(c) < 32 or c in "\\\x7f" for c in name):
        raise BadName(f"workspace name {name!r}: no control characters or backslashes")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise BadName(f"workspace name {name!r}: parts separated by '/' must be non-empty "
                      "and not '.' or '..' (no absolute names)")
    return name


def check_relative_path(path: str) -> tuple[str, ...]:
    """The parts of a path inside a workspace (``/``-separated, relative); :class:`BadName`
    for an absolute path, a ``..`` part, a NUL, or nothing at all."""
    if not isinstance(path, str) or "\x00" in path:
        raise BadName("a path in a workspace must be text without NUL")
    if path.startswith("/"):
        raise BadName(f"{path!r}: absolute paths are not allowed in a workspace")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise BadName(f"{path!r}: '..' is not allowed in a workspace path")
    if not parts:
        raise BadName("an empty path")
    return parts


def _check_snapshot_id(snapshot_id: str) -> str:
    if not isinstance(snapshot_id, str) or len(snapshot_id) != 23 or \
            not all(c.isalnum() or c == "-" for c in snapshot_id):
        raise BadName(f"{snapshot_id!r} is not a snapshot id")
    return snapshot_id


def new_snapshot_id(now: float | None = None) -> str:
    """A snapshot id: its UTC time (so ids sort by time) and 24 random bits."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


# -- what the store reports ---------------------------------------------------------------

@dataclass(frozen=True)
class WorkspaceInfo:
    """One workspace: its ``bytes`` and ``files`` as last saved, when (``last_saved``, epoch
    seconds, None before the first save), by which session (``last_session``), and the live
    session writing it now (``live_session``, or None)."""

    name: str
    bytes: int
    files: int
    last_saved: float | None
    last_session: str | None
    live_session: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot: ``id``, ``time`` cut (epoch seconds), the ``session_id`` whose end cut
    it (None for an upload), the ``resource`` that session ran on, ``files`` and ``bytes``,
    and whether the runner's final save had completed (``saved``; False: it is what the
    runner had saved when the session ended without one, e.g. after a kill -9)."""

    id: str
    time: float
    session_id: str | None
    resource: str | None
    files: int
    bytes: int
    saved: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpenWorkspace:
    """A workspace opened for a session: SFTP serves ``root`` to the session's runner (only
    reading when ``read_only``)."""

    owner: str
    name: str
    session_id: str
    root: Path
    read_only: bool
    snapshot: str | None  # the snapshot it was restored from, None for the latest state


# -- the interface --------------------------------------------------------------------------

class WorkspaceStore(abc.ABC):
    """Where workspaces are kept. Every method takes the ``owner`` (the relay's identity of
    the caller) first: an owner reaches only its own workspaces, whatever the name says.

    Limits: ``quota`` bytes per owner (every file counted once, whatever snapshots share it;
    0: none), ``max_file`` bytes per file (0: none), ``history`` snapshots kept per workspace.
    """

    def __init__(self, *, quota: int = 0, max_file: int = 0, history: int = 10):
        self.quota = quota
        self.max_file = max_file
        self.history = max(1, history)

    @abc.abstractmethod
    def list(self, owner: str) -> list[WorkspaceInfo]:
        """The owner's workspaces, by name."""

    @abc.abstractmethod
    def info(self, owner: str, name: str) -> WorkspaceInfo:
        """One workspace; :class:`WorkspaceNotFound` if the owner has none of that name."""

    @abc.abstractmethod
    def snapshots(self, owner: str, name: str) -> list[SnapshotInfo]:
        """The workspace's snapshots, newest first (:class:`WorkspaceNotFound`)."""

    @abc.abstractmethod
    def write_zip(self, owner: str, name: str, snapshot_id: str | None, fileobj: IO[bytes]
                  ) -> None:
        """Write the workspace (its latest saved state, or snapshot ``snapshot_id``) to
        ``fileobj`` as a zip; symlinks are zip symlink entries, never followed."""

    @abc.abstractmethod
    def import_files(self, owner: str, name: str, source: str | os.PathLike | IO[bytes],
                     ) -> SnapshotInfo:
        """Replace the workspace's content (creating it if new) with ``source`` — a folder,
        a zip file's path, or a binary file object holding a zip — and cut a snapshot of it
        (the earlier ones stay in its history). All or nothing: a bad name inside, a file
        over the size limit or the quota hit leaves the workspace as it was
        (:class:`BadName`, :class:`QuotaExceeded`); :class:`WorkspaceBusy` while a session
        writes it."""

    @abc.abstractmethod
    def delete(self, owner: str, name: str) -> None:
        """Remove the workspace and its history; :class:`WorkspaceBusy` while a live session
        has it open."""

    @abc.abstractmethod
    def usage(self, owner: str) -> int:
        """Bytes the owner's workspaces take (working copies and snapshots, each stored file
        counted once)."""

    @abc.abstractmethod
    def open_for_session(self, owner: str, name: str, session_id: str,
                         snapshot_id: str | None = None, read_only: bool = False
                         ) -> OpenWorkspace:
        """Open the workspace (created empty if new) for ``session_id``.

        A writer gets the working copy — first reset to ``snapshot_id`` when given — and is
        the only one: while another live session writes the workspace this raises
        :class:`WorkspaceBusy` naming it. ``read_only`` gets a private copy of the latest
        state (or of the snapshot) that nothing saves back, and is never refused for a
        writer. Opening again for the same session returns the same workspace."""

    @abc.abstractmethod
    def close_for_session(self, owner: str, name: str, session_id: str, *,
                          saved: bool = True, resource: str | None = None
                          ) -> SnapshotInfo | None:
        """The session ended: a writer's working copy as last saved becomes a snapshot
        (``saved``: whether the runner's final save completed; ``resource``: where it ran),
        the oldest beyond ``history`` are dropped, and the workspace is free again. A
        read-only session's copy is removed. Returns the snapshot (None for read-only or a
        session that did not have it open)."""

    @abc.abstractmethod
    def opened(self, owner: str, name: str, session_id: str) -> OpenWorkspace | None:
        """The workspace as open for ``session_id``, or None (not open, or closed)."""

    @abc.abstractmethod
    def note_saved(self, owner: str, name: str, session_id: str,
                   resource: str | None = None) -> None:
        """The writer ``session_id`` (running on ``resource``) changed the working copy:
        ``last_saved`` is now, and its end will cut a snapshot."""


# -- the folder store -----------------------------------------------------------------------

META = "workspace.json"
CURRENT = "current"
SNAPSHOTS = "snapshots"
READERS = "readers"
SNAPSHOT_META = "snapshot.json"
SNAPSHOT_FILES = "files"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _walk(root: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every entry under ``root`` (path, relative '/'-name, lstat), never following links."""
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            rel = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            yield Path(entry.path), rel, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(entry.path), rel + "/"))


def _tree_totals(root: Path) -> tuple[int, int]:
    files = size = 0
    for _, _, st in _walk(root):
        if stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    return files, size


def link_tree(src: Path, dst: Path) -> None:
    """Copy the tree ``src`` to the new folder ``dst`` cheaply: regular files as hard links
    (they are never changed in place: writers replace files, see :mod:`launcher.relay.sftp`),
    folders made, symlinks recreated as links; anything else is left out."""
    dst.mkdir(parents=True, exist_ok=False)
    for path, rel, st in _walk(src):
        target = dst / rel
        if stat.S_ISDIR(st.st_mode):
            target.mkdir(mode=0o700)
        elif stat.S_ISREG(st.st_mode):
            os.link(path, target)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), target)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


class FolderWorkspaceStore(WorkspaceStore):
    """Workspaces in a folder: ``<root>/<owner>/<name>/`` (both URL-quoted into one path
    part) holds ``workspace.json`` (who writes it, when it was saved), ``current/`` (the
    working copy a writer's runner saves into), ``snapshots/<id>/{files/,snapshot.json}``
    (hard-link copies of ``current/``: unchanged files cost nothing) and
    ``readers/<session id>/`` (read-only sessions' copies).

    ``is_live(session_id)`` says whether a session is still live (the relay's store): a
    writer recorded in ``workspace.json`` whose session is no longer live does not hold the
    workspace (its close is done on the next open). All methods are thread-safe.
    """

    def __init__(self, root: str | os.PathLike, *, quota: int = 0, max_file: int = 0,
                 history: int = 10, is_live: Callable[[str], bool] | None = None):
        super().__init__(quota=quota, max_file=max_file, history=history)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._is_live = is_live or (lambda session_id: True)
        self._lock = threading.RLock()

    # paths
    def _owner_dir(self, owner: str) -> Path:
        if not owner or not isinstance(owner, str) or "\x00" in owner:
            raise BadName("no owner")
        return self.root / quote(owner, safe="")

    def _dir(self, owner: str, name: str) -> Path:
        return self._owner_dir(owner) / quote(check_name(name), safe="")

    def _existing(self, owner: str, name: str) -> Path:
        folder = self._dir(owner, name)
        if not (folder / META).exists():
            raise WorkspaceNotFound(f"you have no workspace {check_name(name)!r}")
        return folder

    def _create(self, owner: str, name: str) -> Path:
        folder = self._dir(owner, name)
        if not (folder / META).exists():
            (folder / CURRENT).mkdir(parents=True, exist_ok=True, mode=0o700)
            (folder / SNAPSHOTS).mkdir(exist_ok=True, mode=0o700)
            _write_json(folder / META, {"owner": owner, "name": check_name(name)})
        return folder

    def _writer(self, folder: Path) -> tuple[dict[str, Any], str | None]:
        """The workspace's metadata and its live writer (a dead one's close is done here:
        what it saved last becomes a snapshot)."""
        meta = _read_json(folder / META)
        writer = meta.get("live_session")
        if writer and not self._is_live(writer):
            self._cut(folder, meta, writer, saved=False, resource=meta.get("live_resource"))
            meta = _read_json(folder / META)
            writer = None
        return meta, writer

    # reading
    def list(self, owner: str) -> list[WorkspaceInfo]:
        base = self._owner_dir(owner)
        if not base.is_dir():
            return []
        found = []
        for entry in sorted(base.iterdir()):
            if (entry / META).exists():
                with contextlib.suppress(WorkspaceError):
                    found.append(self.info(owner, unquote(entry.name)))
        return found

    def info(self, owner: str, name: str) -> WorkspaceInfo:
        with self._lock:
            folder = self._existing(owner, name)
            meta, writer = self._writer(folder)
            files, size = _tree_totals(folder / CURRENT)
            return WorkspaceInfo(name=check_name(name), bytes=size, files=files,
                                 last_saved=meta.get("last_saved"),
                                 last_session=meta.get("last_session"), live_session=writer)

    def snapshots(self, owner: str, name: str) -> list[SnapshotInfo]:
        folder = self._existing(owner, name)
        found = []
        for entry in (folder / SNAPSHOTS).iterdir():
            data = _read_json(entry / SNAPSHOT_META)
            if data:  # a snapshot without its metadata was never finished
                found.append(SnapshotInfo(**data))
        return sorted(found, key=lambda s: (s.time, s.id), reverse=True)

    def _tree(self, owner: str, name: str, snapshot_id: str | None) -> Path:
        folder = self._existing(owner, name)
        if snapshot_id is None:
            return folder / CURRENT
        tree = folder / SNAPSHOTS / _check_snapshot_id(snapshot_id)
        if not (tree / SNAPSHOT_META).exists():
            raise WorkspaceNotFound(f"workspace {name!r} has no snapshot {snapshot_id}")
        return tree / SNAPSHOT_FILES

    def write_zip(self, owner: str, name: str, snapshot_id: str | None, fileobj: IO[bytes]
                  ) -> None:
        with self._lock:
            tree = self._tree(owner, name, snapshot_id)
            # a private link copy: the zip is consistent even if a session saves meanwhile
            frozen = self._owner_dir(owner) / f".zip-{secrets.token_hex(6)}"
            link_tree(tree, frozen)
        try:
            with zipfile.ZipFile(fileobj, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                for path, rel, st in _walk(frozen):
                    if stat.S_ISDIR(st.st_mode):
                        info = zipfile.ZipInfo(rel + "/", _zip_time(st.st_mtime))
                        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                        zf.writestr(info, b"")
                    elif stat.S_ISLNK(st.st_mode):
                        info = zipfile.ZipInfo(rel, _zip_time(st.st_mtime))
                        info.create_system = 3  # unix: external_attr holds the mode
                        info.external_attr = (stat.S_IFLNK | 0o777) << 16
                        zf.writestr(info, os.readlink(path))
                    elif stat.S_ISREG(st.st_mode):
                        info = zipfile.ZipInfo(rel, _zip_time(st.st_mtime))
                        info.create_system = 3
                        info.external_attr = (stat.S_IFREG | (st.st_mode & 0o777)) << 16
                        info.compress_type = zipfile.ZIP_DEFLATED
                        with open(path, "rb") as src, zf.open(info, "w",
                                                               force_zip64=True) as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            shutil.rmtree(frozen, ignore_errors=True)

    def usage(self, owner: str) -> int:
        base = self._owner_dir(owner)
        seen: set[tuple[int, int]] = set()
        total = 0
        trees = list(base.glob("*/" + CURRENT))
        trees += base.glob(f"*/{SNAPSHOTS}/*/{SNAPSHOT_FILES}")
        trees += base.glob(".import-*")  # an upload being checked counts too
        for tree in trees:
            for _, _, st in _walk(tree):
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total

    # changing
    def import_files(self, owner: str, name: str, source: str | os.PathLike | IO[bytes],
                     ) -> SnapshotInfo:
        name = check_name(name)
        base = self._owner_dir(owner)
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".import-{secrets.token_hex(6)}"
        try:
            if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
                self._stage_folder(Path(source), staging)
            else:
                try:
                    self._stage_zip(source, staging)
                except (zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
                    raise BadName(f"a broken zip file: {exc}") from None
            with self._lock:
                if self.quota and self.usage(owner) > self.quota:
                    raise QuotaExceeded(
                        f"this upload would take your workspaces past your quota of "
                        f"{self.quota} bytes; delete a workspace or upload less")
                folder = self._create(owner, name)
                meta, writer = self._writer(folder)
                if writer:
                    raise WorkspaceBusy(f"workspace {name!r} is open in live session "
                                        f"{writer}; end it first", writer)
                old = folder / f".old-{secrets.token_hex(6)}"
                os.replace(folder / CURRENT, old)
                os.replace(staging, folder / CURRENT)
                shutil.rmtree(old, ignore_errors=True)
                return self._snapshot(folder, meta, None, saved=True, resource=None)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _check_file_size(self, rel: str, size: int) -> None:
        if self.max_file and size > self.max_file:
            raise QuotaExceeded(f"{rel}: {size} bytes is over the limit of {self.max_file} "
                                "bytes per file in a workspace")

    def _stage_folder(self, src: Path, staging: Path) -> None:
        staging.mkdir(mode=0o700)
        for path, rel, st in _walk(src):
            target = staging / rel
            if stat.S_ISDIR(st.st_mode):
                target.mkdir(mode=0o700)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), target)
            elif stat.S_ISREG(st.st_mode):
                self._check_file_size(rel, st.st_size)
                shutil.copyfile(path, target, follow_symlinks=False)
                os.chmod(target, st.st_mode & 0o700 | 0o600)

    def _stage_zip(self, source: str | os.PathLike | IO[bytes], staging: Path) -> None:
        staging.mkdir(mode=0o700)
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise BadName(f"not a folder or a zip file: {exc}") from None
        with zf:
            for info in zf.infolist():
                parts = check_relative_path(info.filename)
                rel = "/".join(parts)
                target = staging.joinpath(*parts)
                mode = info.external_attr >> 16
                # parents made here are real folders: a link never becomes a parent
                for parent in reversed(target.relative_to(staging).parents[:-1]):
                    p = staging / parent
                    if p.is_symlink() or (p.exists() and not p.is_dir()):
                        raise BadName(f"{rel}: goes through a link or a file")
                    p.mkdir(mode=0o700, exist_ok=True)
                if info.is_dir():
                    target.mkdir(mode=0o700, exist_ok=True)
                elif stat.S_ISLNK(mode):
                    link = zf.read(info).decode("utf-8", "surrogateescape")
                    if "\x00" in link:
                        raise BadName(f"{rel}: a link with NUL in it")
                    os.symlink(link, target)
                else:
                    self._check_file_size(rel, info.file_size)
                    if target.is_symlink() or target.exists():
                        raise BadName(f"{rel}: twice in the zip")
                    with zf.open(info) as src, open(target, "xb") as dst:
                        copied = 0
                        while chunk := src.read(1 << 20):
                            copied += len(chunk)
                            self._check_file_size(rel, copied)
                            dst.write(chunk)
                    os.chmod(target, (mode & 0o700 | 0o600) if mode else 0o600)

    def delete(self, owner: str, name: str) -> None:
        with self._lock:
            folder = self._existing(owner, name)
            meta, writer = self._writer(folder)
            readers = [s for s in meta.get("readers", []) if self._is_live(s)]
            if writer or readers:
                busy = writer or readers[0]
                raise WorkspaceBusy(f"workspace {check_name(name)!r} is open in live "
                                    f"session {busy}; end it first", busy)
            gone = folder.with_name(f".deleted-{secrets.token_hex(6)}")
            os.replace(folder, gone)  # gone at once for everyone; removing can take a while
        shutil.rmtree(gone, ignore_errors=True)

    def open_for_session(self, owner: str, name: str, session_id: str,
                         snapshot_id: str | None = None, read_only: bool = False
                         ) -> OpenWorkspace:
        name = check_name(name)
        if snapshot_id is not None:
            _check_snapshot_id(snapshot_id)
        with self._lock:
            if snapshot_id is not None:
                self._tree(owner, name, snapshot_id)  # WorkspaceNotFound before creating
            folder = self._create(owner, name)
            meta, writer = self._writer(folder)
            if read_only:
                root = folder / READERS / session_id
                if not root.exists():
                    (folder / READERS).mkdir(exist_ok=True, mode=0o700)
                    link_tree(self._tree(owner, name, snapshot_id), root)
                    meta["readers"] = [s for s in meta.get("readers", [])
                                       if self._is_live(s)] + [session_id]
                    _write_json(folder / META, meta)
                return OpenWorkspace(owner, name, session_id, root, True, snapshot_id)
            if writer and writer != session_id:
                raise WorkspaceBusy(
                    f"workspace {name!r} is open in live session {writer}; end that session "
                    "or open this one read-only (a copy nothing saves back)", writer)
            if writer != session_id:
                if snapshot_id is not None:
                    fresh = folder / f".restore-{secrets.token_hex(6)}"
                    link_tree(self._tree(owner, name, snapshot_id), fresh)
                    old = folder / f".old-{secrets.token_hex(6)}"
                    os.replace(folder / CURRENT, old)
                    os.replace(fresh, folder / CURRENT)
                    shutil.rmtree(old, ignore_errors=True)
                meta.update(live_session=session_id, live_snapshot=snapshot_id)
                _write_json(folder / META, meta)
            return OpenWorkspace(owner, name, session_id, folder / CURRENT, False,
                                 meta.get("live_snapshot"))

    def opened(self, owner: str, name: str, session_id: str) -> OpenWorkspace | None:
        with self._lock:
            try:
                folder = self._existing(owner, name)
            except WorkspaceError:
                return None
            meta = _read_json(folder / META)
            if meta.get("live_session") == session_id:
                return OpenWorkspace(owner, check_name(name), session_id, folder / CURRENT,
                                     False, meta.get("live_snapshot"))
            if session_id in meta.get("readers", []):
                return OpenWorkspace(owner, check_name(name), session_id,
                                     folder / READERS / session_id, True, None)
            return None

    def note_saved(self, owner: str, name: str, session_id: str,
                   resource: str | None = None) -> None:
        with self._lock:
            folder = self._dir(owner, name)
            meta = _read_json(folder / META)
            if meta.get("live_session") != session_id:
                return
            meta.update(last_saved=time.time(), last_session=session_id, live_wrote=True)
            if resource:
                meta["live_resource"] = resource
            _write_json(folder / META, meta)

    def close_for_session(self, owner: str, name: str, session_id: str, *,
                          saved: bool = True, resource: str | None = None
                          ) -> SnapshotInfo | None:
        with self._lock:
            try:
                folder = self._existing(owner, name)
            except WorkspaceError:
                return None
            meta = _read_json(folder / META)
            if session_id in meta.get("readers", []):
                meta["readers"] = [s for s in meta["readers"] if s != session_id]
                _write_json(folder / META, meta)
                shutil.rmtree(folder / READERS / session_id, ignore_errors=True)
                return None
            if meta.get("live_session") != session_id:
                return None
            return self._cut(folder, meta, session_id, saved=saved,
                             resource=resource or meta.get("live_resource"))

    def _cut(self, folder: Path, meta: dict[str, Any], session_id: str, *, saved: bool,
             resource: str | None) -> SnapshotInfo | None:
        """Free the workspace of its writer; a snapshot of what it saved, if it saved
        anything (None: the latest snapshot already holds this state)."""
        snap = None
        if meta.get("live_wrote") or not self.snapshots(meta.get("owner", ""),
                                                       meta.get("name", "")):
            snap = self._snapshot(folder, meta, session_id, saved=saved, resource=resource)
        meta = _read_json(folder / META)
        for key in ("live_session", "live_snapshot", "live_resource", "live_wrote"):
            meta.pop(key, None)
        meta["last_session"] = session_id
        _write_json(folder / META, meta)
        return snap

    def _snapshot(self, folder: Path, meta: dict[str, Any], session_id: str | None, *,
                  saved: bool, resource: str | None) -> SnapshotInfo:
        now = time.time()
        sid = new_snapshot_id(now)
        tree = folder / SNAPSHOTS / sid
        (folder / SNAPSHOTS).mkdir(exist_ok=True, mode=0o700)
        link_tree(folder / CURRENT, tree / SNAPSHOT_FILES)
        files, size = _tree_totals(tree / SNAPSHOT_FILES)
        info = SnapshotInfo(id=sid, time=now, session_id=session_id, resource=resource,
                            files=files, bytes=size, saved=saved)
        _write_json(tree / SNAPSHOT_META, info.to_json())  # written last: it is complete
        meta = _read_json(folder / META)
        meta.setdefault("last_saved", now)
        if session_id is None:
            meta["last_saved"] = now
        _write_json(folder / META, meta)
        owner, name = meta.get("owner", ""), meta.get("name", "")
        for old in self.snapshots(owner, name)[self.history:]:
            shutil.rmtree(tree.parent / old.id, ignore_errors=True)
        for entry in (folder / SNAPSHOTS).iterdir():  # unfinished ones of a crash
            if not (entry / SNAPSHOT_META).exists() and entry.stat().st_mtime < now - 3600:
                shutil.rmtree(entry, ignore_errors=True)
        return info


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    t = time.localtime(max(mtime, 315532800))  # zip has no dates before 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
