"""Tasks on an SSH host: SFTP staging, a detached wrapper, signals to its process group.

Each task gets the remote folder ``<workdir>/<task-id>`` (``workdir`` is relative to the
login's home unless absolute; default ``.everest-tasks``), which receives the staged work
folder and the ``argv`` file by SFTP. One fixed command line starts the wrapper in a new
session (``setsid``) with its input and output redirected, so it outlives the SSH channel
and the server; it records its process group in ``pgid`` and the status in ``exit``. Cancel
and the time limit signal that process group (``kill -INT -PGID``); the outputs come back
by SFTP. The only value in that command line is the folder (made from the task id, quoted); the
task's arguments travel in ``argv``, its token in ``env.sh``.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import time
from typing import Any

from everest_app.states import JobState
from everest_local.backends.base import (
    DETACHED,
    PGID_FILE,
    BackendError,
    FolderBackend,
    Report,
    TaskSpec,
    parse_status,
    task_env,
    write_env,
)
from everest_local.backends.hosts import SSHHost
from everest_local.processes import EXIT_FILE, WRAPPER

LIVENESS_EVERY = 2.0
log = logging.getLogger(__name__)


def detached_line(folder: str) -> str:
    """The shell line that starts a task's wrapper detached in ``folder/work``."""
    # setsid -f, not `&`: a shell's background job starts with SIGINT ignored, and the
    # task must feel the SIGINT of a cancel
    return (f"cd {shlex.quote(folder)}/work && setsid -f /bin/sh -c "
            f"{shlex.quote(DETACHED)} {shlex.quote(WRAPPER)} </dev/null >stdout 2>stderr")


class SSHBackend(FolderBackend):
    """A resource of kind ``ssh``."""

    def __init__(self, resource: Any):
        super().__init__(resource)
        self.host = SSHHost(resource.options)
        self.workdir = resource.options.get("workdir", ".everest-tasks").rstrip("/")

    def handle_for(self, spec: TaskSpec) -> dict[str, Any]:
        return {"dir": f"{self.workdir}/{spec.task_id}"}

    async def launch(self, spec: TaskSpec, handle: dict[str, Any]) -> dict[str, Any]:
        folder = handle["dir"]
        write_env(spec.dir, task_env(spec))
        await self.host.rmtree(folder)  # a previous, unstarted try
        await self.host.put_dir(spec.dir, folder)
        await self.host.run_line(detached_line(folder))
        return handle

    async def started(self, handle: dict[str, Any]) -> bool:
        folder = handle["dir"]
        return (await self.host.read(f"{folder}/{PGID_FILE}") is not None
                or await self.host.read(f"{folder}/{EXIT_FILE}") is not None)

    async def _pgid(self, handle: dict[str, Any]) -> int | None:
        for _ in range(20):  # the detached shell writes it right after starting
            data = await self.host.read(f"{handle['dir']}/{PGID_FILE}")
            if data and data.endswith(b"\n"):
                return int(data)
            await asyncio.sleep(0.05)
        return None

    async def wait(self, handle: dict[str, Any], report: Report) -> tuple[int | None, str]:
        exit_path = f"{handle['dir']}/{EXIT_FILE}"
        report(JobState.RUNNING, None)
        checked = time.monotonic()
        pauses = self.pauses()
        while True:
            code = parse_status(await self.host.read(exit_path))
            if code is not None:
                await self._end_leftovers(handle)
                return code, ""
            if time.monotonic() - checked > LIVENESS_EVERY:
                checked = time.monotonic()
                if not await self._alive(handle):
                    code = parse_status(await self.host.read(exit_path))
                    await self._end_leftovers(handle)
                    return code, "its processes on the SSH host ended without an exit status"
            await asyncio.sleep(next(pauses))

    async def _end_leftovers(self, handle: dict[str, Any]) -> None:
        """Kill what the ended task left running there: its process group (a double-forked
        ``nohup`` child stays in it), and any process of the login whose environment
        still names the task (a ``setsid`` daemon that kept it; one that cleared its
        environment escapes: an SSH login runs no container)."""
        pgid = await self._pgid(handle)
        task = f"EVEREST_TASK_ID={handle['dir'].rsplit('/', 1)[-1]}"
        # one grep over every process's environment (a grep per process cost a second per
        # task on a busy host); its own and the login shell's environments lack the name
        line = (f"for f in $(grep -lsxzF {shlex.quote(task)} /proc/[0-9]*/environ); do "
                'p=${f#/proc/}; kill -KILL "${p%/environ}" 2>/dev/null; done; true')
        if pgid is not None:
            line = f"kill -KILL -{pgid} 2>/dev/null; {line}"
        try:
            await self.host.run_line(line, check=False)
        except Exception as exc:  # the task has ended either way: say so, go on
            log.warning("could not end what task %s left on the SSH host: %s", handle["dir"],
                        exc)

    async def _alive(self, handle: dict[str, Any]) -> bool:
        pgid = await self._pgid(handle)
        if pgid is None:
            return False
        # `kill -SIG -PGID` (no `--`): the form both dash and bash accept
        code, _, _ = await self.host.run_line(f"kill -0 -{pgid}", check=False)
        return code == 0

    async def signal(self, handle: dict[str, Any], sig: int) -> None:
        pgid = await self._pgid(handle)
        if pgid is None:
            raise BackendError(f"task folder {handle['dir']}: no process group recorded")
        name = signal.Signals(sig).name.removeprefix("SIG")
        await self.host.run_line(f"kill -{name} -{pgid}", check=False)

