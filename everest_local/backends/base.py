"""What every executor backend is: :class:`Backend` and :class:`FolderBackend`, the task's
spec, and the files a task folder holds (``argv``, ``env.sh``, ``pgid``)."""

from __future__ import annotations

import json
import logging
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from everest_app.states import JobState
from everest_local.resources import Resource
from everest_local.workdir import read_small

if TYPE_CHECKING:  # a folder backend holds a host; hosts need only BackendError from here
    from everest_local.backends.hosts import Host

log = logging.getLogger(__name__)

ARGV_FILE = "argv"
PGID_FILE = "pgid"
EXIT_FILE = "exit"  # written by the wrapper (everest_local.processes.WRAPPER)
PID_FILE = "pid"

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
    owner: str = ""  # the Everest user whose job this is

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


def read_status(folder: Path) -> int | None:
    """The wrapper's exit status in a task folder on this machine, None until written (read
    without following a link or blocking on a FIFO the task may have put there)."""
    return parse_status(read_small(folder, EXIT_FILE))


def read_pid(folder: Path) -> int | None:
    """The wrapper's pid recorded in a task folder on this machine, or None."""
    data = read_small(folder, PID_FILE)
    try:
        return int(data) if data and data.endswith(b"\n") else None
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
    stages_on_loop = False
    """True: a task without input files is staged on the event loop (a thread hop would
    cost more than the few small files an app brings)."""
    handle_before_launch = True
    """True: the handle is stored before :meth:`launch` (a restart must find what a launch
    it interrupted left there); False: the task exists only once launched."""
    running_at_launch = False
    """True: the job is RUNNING as soon as :meth:`launch` returns; False: when :meth:`wait`
    reports it (a Slurm job may queue there first)."""

    def __init__(self, resource: Resource):
        self.resource = resource

    def pauses(self, first: float = 0.01, growth: float = 1.5) -> Iterator[float]:
        """Seconds to sleep between looks at a running task: from ``first``, growing by
        ``growth`` up to :attr:`poll_interval`, so the end of a short task is seen within
        a few percent of its run time and a long one costs a look per interval."""
        pause = min(first, self.poll_interval)
        while True:
            yield pause
            pause = min(self.poll_interval, pause * growth)

    def prepare(self, spec: TaskSpec) -> None:
        """Finish a staged task folder for this kind (blocking, runs in a worker thread):
        by default the ``argv`` file the wrapper reads there. Raises StagingError."""
        write_argv(spec.dir, spec.argv)

    def stored_handle(self, task: Any) -> dict[str, Any] | None:
        """After a restart: the handle of a stored task row (None: never recorded)."""
        return json.loads(task.handle) if task.handle else None

    def describe(self, handle: dict[str, Any]) -> str:
        """A few words naming the task there, for the job's events."""
        named = ", ".join(f"{k} {v}" for k, v in handle.items() if k != "dir")
        return f"{self.resource.kind}: {named or 'folder ' + str(handle.get('dir'))}"

    def poll(self) -> None:  # noqa: B027 - optional: only the local kind reaps children
        """Look at once for ended tasks (the executor calls this on SIGCHLD)."""

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
