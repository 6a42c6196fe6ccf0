"""Running out of disk without losing the way back: errors that say so, and room to delete.

When the data directory's filesystem is full, writes fail — an upload's bytes with
``ENOSPC``, SQLite's commits with "database or disk is full". :func:`is_disk_full` tells
those apart from other errors so the API answers ``507 Insufficient Storage`` with a message
saying what to do, never a 500. SQLite is safe meanwhile (a failed commit rolls back).

But a delete also writes (SQLite appends to its WAL before it can free pages), so on a
full disk the very requests that would free space would fail too. :class:`DiskReserve` keeps
a few MiB of the filesystem in a file of its own; :meth:`DiskReserve.room` runs a freeing
operation and, if it meets a full disk, gives the reserve back to the filesystem and runs it
again. The reserve is taken anew once there is room.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

RESERVE_FILE = ".disk-reserve"
T = TypeVar("T")


def is_disk_full(exc: BaseException | None) -> bool:
    """True for the errors a full filesystem (or quota) gives writers."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc) or "disk I/O error" in str(exc)
    return False


DISK_FULL_MESSAGE = ("the server's disk is full: nothing was stored. Free space by deleting "
                     "files (DELETE /api/user/tmp_files) or jobs, or ask the admin")


class DiskReserve:
    """``size`` bytes held in ``<folder>/.disk-reserve`` for deletes on a full disk."""

    def __init__(self, folder: Path, size: int = 4 << 20):
        self.path = Path(folder) / RESERVE_FILE
        self.size = size
        self.take()

    def take(self) -> bool:
        """(Re)claim the reserve; False when the disk has no room for it yet."""
        if self.size <= 0:
            return False
        with contextlib.suppress(OSError):
            if self.path.stat().st_size >= self.size:
                return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            return True
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            log.warning("disk full: released the %d-byte reserve so deletes can proceed",
                        self.size)

    def room(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` (which frees space); on a full disk release the reserve and run
        it once more. The reserve is taken back afterwards if there is room."""
        try:
            result = operation()
        except (OSError, sqlite3.OperationalError) as exc:
            if not is_disk_full(exc):
                raise
            self.release()
            result = operation()
        self.take()
        return result
