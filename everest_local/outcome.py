"""How a task ended, and what that makes of its job: outputs read, state and info decided.

Pure decisions and file reading, no database and no event loop: the executor gathers a
:class:`TaskEnd` (exit status, why it was stopped, why it could not start or why it left no
status), :func:`collect` reads the outputs from the work folder, and :func:`verdict` turns
both into the job's final state and info.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from everest_app.descriptor import Application
from everest_app.states import JobState
from everest_local import processes
from everest_local.staging import StagingError, collect_outputs
from everest_local.workdir import Opened, UnsafeFile, UnsafeFolder, WorkDir


class TaskStop(str, enum.Enum):
    """Why the executor stops a running task (stored with the task, so a restart resumes it)."""

    CANCEL = "cancel"
    DELETE = "delete"
    SHUTDOWN = "shutdown"
    TIMEOUT = "timeout"
    DISK_FULL = "disk full"


STOP_INFO = {
    TaskStop.CANCEL: "cancelled by the user",
    TaskStop.DELETE: "deleted by the user",
    TaskStop.SHUTDOWN: "cancelled: the local server was stopped while the task ran",
}
STOP_EVENT = {TaskStop.TIMEOUT: "time limit reached", TaskStop.CANCEL: "cancel requested",
              TaskStop.SHUTDOWN: "server stopping", TaskStop.DELETE: "job deleted",
              TaskStop.DISK_FULL: "the data disk is full and its folder holds the most"}


class Ending(enum.Enum):
    """How a task's run ended, before any stop request is taken into account."""

    EXITED = "exited"  # it left an exit status
    NOT_STARTED = "not started"  # staging or launching failed
    LOST = "lost"  # it ended without leaving a status (its place says why, if it can)


LOST_WHILE_DOWN = ("its process ended while the local server was not running and left no "
                   "exit status")


@dataclass
class TaskEnd:
    """What is known of a task's end."""

    code: int | None = None
    stop: TaskStop | None = None
    start_error: str | None = None
    lost: str | None = None  # why there is no exit status, in the words of its backend
    refused: str | None = None  # why its work folder came back unsafe to read

    @property
    def ending(self) -> Ending:
        if self.start_error is not None:
            return Ending.NOT_STARTED
        return Ending.LOST if self.code is None else Ending.EXITED

    @property
    def ok(self) -> bool:
        return self.ending is Ending.EXITED and self.code == 0 and self.stop is None

    @property
    def may_retry(self) -> bool:
        """A task that ran and failed (or was lost) may succeed again; one that could not
        start (no such command, a deleted input file) or was stopped will not."""
        return self.stop is None and self.ending is not Ending.NOT_STARTED


@dataclass
class Outputs:
    """What was read from a finished task's work folder."""

    result: dict[str, Any]
    files: list[tuple[str, str, str, int]]  # (uri, name, stored path, length)
    error: str | None = None
    stderr: str = ""
    refused: str | None = None  # the work folder was not safe to enter: nothing was read


NO_OUTPUTS = Outputs({}, [])


def collect(files_store: Any, app: Application, job_id: str, task_dir: Path,
            ok: bool) -> Outputs:
    """Read outputs and the tail of stderr of a finished task, through its work folder held
    open (file outputs are moved into the job's files by ``files_store.publish``)."""
    published: list[tuple[str, str, str, int]] = []
    taken: set[str] = set()

    def publish(opened: Opened, name: str) -> str:
        uri, dest, length = files_store.publish(job_id, opened, name, taken)
        published.append((uri, dest.name, str(dest), length))
        return uri

    try:
        work = WorkDir(task_dir)
    except UnsafeFolder as exc:
        return Outputs({}, [], refused=str(exc))
    with work:
        error = None
        try:
            result = collect_outputs(app, work, publish, strict=ok)
        except StagingError as exc:
            error = str(exc)
            result = collect_outputs(app, work, publish, strict=False)
        return Outputs(result, published, error, last_line(work))


def last_line(work: WorkDir) -> str:
    """The last non-empty line of the last 4 KiB of the task's stderr (at most 300
    characters)."""
    try:
        opened = work.open("stderr")
    except UnsafeFile:
        return ""
    if opened is None:
        return ""
    try:
        os.lseek(opened.fd, max(0, opened.stat.st_size - 4096), os.SEEK_SET)
        tail = os.read(opened.fd, 4096).decode("utf-8", errors="replace")
    finally:
        opened.close()
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def verdict(task_id: str, end: TaskEnd, outputs: Outputs,
            app: Application | None) -> tuple[JobState, str | None]:
    """The job's final state and info for how its task ended."""
    if end.stop in STOP_INFO:
        return JobState.CANCELLED, STOP_INFO[end.stop]
    if end.stop is TaskStop.TIMEOUT:
        limit = app.time_limit if app else None
        return JobState.FAILED, (f"task {task_id} exceeded the time limit of {limit or 0:g} s "
                                 "and was stopped")
    if end.stop is TaskStop.DISK_FULL:
        return JobState.FAILED, (f"task {task_id} was stopped: the server's data disk is full "
                                 "and its folder held the most of it")
    if outputs.refused:
        return JobState.FAILED, f"task {task_id}: {outputs.refused}"
    if end.ending is Ending.NOT_STARTED:
        return JobState.FAILED, f"task {task_id} could not start: {end.start_error}"
    if end.ending is Ending.LOST:
        return JobState.FAILED, f"task {task_id}: {end.lost or LOST_WHILE_DOWN}"
    assert end.code is not None
    if end.code != 0:
        tail = f": {outputs.stderr}" if outputs.stderr else ""
        status = processes.describe_status(end.code)
        return JobState.FAILED, f"task {task_id} failed with {status}{tail}"
    if outputs.error:
        return JobState.FAILED, f"task {task_id}: {outputs.error}"
    return JobState.DONE, None


def task_stop(value: str | None) -> TaskStop | None:
    """A stored stop reason as read back after a restart."""
    return TaskStop(value) if value else None
