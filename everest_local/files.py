"""Uploaded and job files: where they live on disk and the URIs that name them.

A file's URI is only a key in the ``files`` table: nothing ever builds a filesystem path
from a URI, so ``..`` in a URI cannot reach anything. On disk a file lives at
``<data>/files/<random id>/<sanitised name>``; it is written to a temporary name and renamed.

URIs (server-relative, ending with the file name as Everest's do):
``/api/files/temp/<id>/<name>`` for uploads and ``/api/files/jobs/<jobId>/<name>`` for
job outputs. URIs are compared in one canonical percent-encoding (:func:`canonical_uri`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote, urlsplit

from everest_local.staging import StagingError, safe_name
from everest_local.store import Store, new_id
from everest_local.workdir import Opened, UnsafeFile, move_out

_SAFE = "-._~!$&'()*+,;=:@"


def canonical_uri(uri: str, server_url: str | None = None) -> str | None:
    """``uri`` in canonical form, or None if it is not one of this server's file URIs.

    An absolute URL is accepted when it points at ``server_url``. Each path segment is
    decoded and re-encoded, so equivalent spellings compare equal.
    """
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        if not server_url or f"{parts.scheme}://{parts.netloc}" != server_url.rstrip("/"):
            return None
        uri = parts.path
    uri = uri.split("?", 1)[0].split("#", 1)[0]
    if not uri.startswith("/api/files/"):
        return None
    segments = [quote(unquote(s), safe=_SAFE) for s in uri.split("/")]
    return "/".join(segments)


class FileStore:
    """Store uploads and publish job outputs; rows in :class:`Store`, bytes on disk."""

    def __init__(self, store: Store, root: Path):
        self.store = store
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def begin_upload(self) -> PendingUpload:
        """An upload to stream into: ``open(name)`` for the sink, then commit or abort."""
        return PendingUpload(self.root)

    def publish(self, job_id: str, src: Opened, name: str,
                taken: set[str]) -> tuple[str, Path, int]:
        """Move a task's opened output file into the job's files under a unique name (by
        its directory entry and descriptor, never its path: see :mod:`everest_local.workdir`).
        Raises StagingError if the file was swapped while it was collected."""
        clean = safe_name(name) or "output"
        stem, dot, ext = clean.partition(".")
        n = 1
        while clean in taken:
            n += 1
            clean = f"{stem}-{n}{dot}{ext}"
        taken.add(clean)
        folder = self.root / "jobs" / job_id
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / clean
        try:
            move_out(src, path)
        except UnsafeFile as exc:
            raise StagingError(str(exc)) from None
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):  # move_out checked it; a belt to its braces
            path.unlink()
            raise StagingError(f"output file {clean} is not a regular file")
        # the task's account owned it: make it the server's own
        os.chmod(path, 0o600)  # in the server's own folder: nothing can swap it here
        if os.geteuid() == 0 and st.st_uid != 0:
            os.lchown(path, 0, 0)
        uri = f"/api/files/jobs/{job_id}/{quote(clean, safe=_SAFE)}"
        return uri, path, st.st_size

    @staticmethod
    def remove_paths(paths: list[str]) -> None:
        """Remove stored files and their folders if empty (missing ones are fine)."""
        for p in paths:
            path = Path(p)
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:
                pass


class PendingUpload:
    """One upload being written: to a hidden temporary name, renamed on :meth:`commit`."""

    def __init__(self, root: Path):
        self.root = root
        self.folder: Path | None = None
        self.name = ""
        self.tmp: Path | None = None
        self.file: IO[bytes] | None = None

    def open(self, name: str) -> IO[bytes]:
        """The file to write the upload named ``name`` to; ValueError for a bad name."""
        clean = safe_name(name)
        if clean is None:
            raise ValueError(f"bad file name {name!r}")
        self.name = clean
        self.folder = self.root / new_id()
        self.folder.mkdir(mode=0o700)
        self.tmp = self.folder / f".{clean}.part"
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.file = open(fd, "wb")  # noqa: SIM115 - closed by commit/abort
        return self.file

    def commit(self) -> tuple[str, Path, int]:
        """Finish the file; returns (uri, path, length)."""
        assert self.file is not None and self.folder is not None and self.tmp is not None
        self.file.close()
        path = self.folder / self.name
        os.replace(self.tmp, path)
        self.file = None
        uri = f"/api/files/temp/{self.folder.name}/{quote(self.name, safe=_SAFE)}"
        return uri, path, path.stat().st_size

    def abort(self) -> None:
        """Drop a half-written upload (nothing stays behind)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
        if self.folder is not None:
            try:
                self.folder.rmdir()
            except OSError:
                pass
