"""Tasks as Slurm batch jobs, submitted here or on a login node over SSH.

The task folder goes to ``<workdir>/<task-id>`` (a file system the compute nodes share;
over SSH ``workdir`` is relative to the login's home, default ``.everest-tasks``), then
``sbatch`` submits the fixed script ``job.sh`` there with options built from the app's
``resourceRequirements`` and the resource's settings:

- ``nodes`` -> ``--nodes``, ``coresPerNode`` -> ``--cpus-per-task``, ``memoryPerCore``
  (read as MiB) -> ``--mem-per-cpu``, ``timeLimit`` (seconds) -> ``--time`` in whole
  minutes (Slurm's unit), at most the resource's ``max_time``;
- ``partition``, ``account``, ``qos`` from the resource; ``run_as`` (a user name): when
  the server is root, the job runs as that user (``sbatch --uid``) and its folder is theirs;
- ``--export=NONE``: the job gets its user's login environment (HOME, PATH), never the
  server's.

The job is named ``everest-<task-id>`` and that name is the handle stored before
submitting, so a server killed between ``sbatch`` and recording the job id finds it again.
The script runs the same wrapper as local tasks (arguments from ``argv``, status in
``exit``). ``squeue`` states map to Everest's: PENDING -> SCHEDULED with the reason
("queued: Priority"), RUNNING -> RUNNING. Cancel and the server's own time limit use
``scancel`` (a signal to the batch shell's processes, then ``scancel`` for good); a job
Slurm ended without an exit status (its own TIMEOUT, a node failure) fails with its state.
"""

from __future__ import annotations

import asyncio
import math
import shlex
import signal
from typing import Any

from everest_app.states import JobState
from everest_local.backends.base import (
    BackendError,
    FolderBackend,
    Report,
    TaskSpec,
    parse_status,
    requirement,
    task_env,
    write_env,
)
from everest_local.backends.hosts import Host, LocalHost, SSHHost
from everest_local.processes import EXIT_FILE, WRAPPER

SCRIPT = "job.sh"
# squeue's states (Slurm's words, not ours) -> what they mean for the task here; None: the
# Slurm job is over. States not listed (SUSPENDED, ...) leave the task as it was.
SQUEUE_STATES: dict[str, JobState | None] = {
    "PENDING": JobState.SCHEDULED, "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING, "CONFIGURING": JobState.RUNNING,
    "COMPLETED": None, "FAILED": None, "CANCELLED": None, "TIMEOUT": None, "NODE_FAIL": None,
    "OUT_OF_MEMORY": None, "PREEMPTED": None, "BOOT_FAIL": None, "DEADLINE": None,
    "REVOKED": None, "SPECIAL_EXIT": None,
}


# the end of the batch script, after the task's variables (its cwd: the work folder)
RUN_WRAPPER = (f'exec xargs -0 -x /bin/sh -c {shlex.quote(WRAPPER)} sh "${{PWD%/work}}" '
               "< ../argv\n")


class SlurmBackend(FolderBackend):
    """A resource of kind ``slurm``."""

    poll_interval = 0.25

    def __init__(self, resource: Any):
        super().__init__(resource)
        opts = self.options = resource.options
        self.poll_interval = float(opts.get("poll_interval", self.poll_interval))
        self.host: Host
        if opts.get("login"):
            self.host = SSHHost(opts["login"])
            self.workdir = opts.get("workdir", ".everest-tasks")
            self.run_as = None
        else:
            self.run_as = opts.get("run_as")
            self.host = LocalHost(owner=self.run_as)
            self.workdir = opts["workdir"]
        self.workdir = self.workdir.rstrip("/")

    def handle_for(self, spec: TaskSpec) -> dict[str, Any]:
        return {"dir": f"{self.workdir}/{spec.task_id}", "name": f"everest-{spec.task_id}"}

    def sbatch_argv(self, spec: TaskSpec, handle: dict[str, Any]) -> list[str]:
        """``sbatch`` with the options of the module docstring (no user value in it)."""
        opts = self.options
        argv = ["sbatch", "--parsable", f"--job-name={handle['name']}",
                f"--chdir={handle['dir']}/work", "--output=stdout", "--error=stderr",
                "--export=NONE"]  # the user's own login environment, not the server's
        for key in ("partition", "account", "qos"):
            if opts.get(key):
                argv.append(f"--{key}={opts[key]}")
        if self.run_as:
            import pwd

            entry = pwd.getpwnam(self.run_as)
            argv += [f"--uid={entry.pw_uid}", f"--gid={entry.pw_gid}"]
        nodes = requirement(spec, "nodes")
        cores = requirement(spec, "coresPerNode")
        memory = requirement(spec, "memoryPerCore")
        if nodes:
            argv.append(f"--nodes={int(nodes)}")
        if cores:
            argv.append(f"--cpus-per-task={int(cores)}")
        if memory:
            argv.append(f"--mem-per-cpu={int(memory)}M")
        limit = spec.time_limit
        if opts.get("max_time"):
            limit = min(limit or opts["max_time"], opts["max_time"])
        if limit:
            argv.append(f"--time={max(1, math.ceil(limit / 60))}")
        argv.append(f"{handle['dir']}/{SCRIPT}")
        return argv

    async def launch(self, spec: TaskSpec, handle: dict[str, Any]) -> dict[str, Any]:
        write_env(spec.dir, task_env(spec), SCRIPT, RUN_WRAPPER)
        await self.host.rmtree(handle["dir"])  # a previous, unstarted try
        await self.host.put_dir(spec.dir, handle["dir"])
        _, out, _ = await self.host.run(self.sbatch_argv(spec, handle))
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise BackendError(f"sbatch answered {out.strip()!r}, not a job id")
        return {**handle, "job_id": job_id}

    async def _find(self, handle: dict[str, Any]) -> str | None:
        if handle.get("job_id"):
            return handle["job_id"]
        _, out, _ = await self.host.run(["squeue", "-h", "-n", handle["name"], "-o", "%i"],
                                        check=False)
        ids = out.split()
        if ids:
            handle["job_id"] = ids[0]
        return handle.get("job_id")

    async def started(self, handle: dict[str, Any]) -> bool:
        if await self._find(handle):
            return True
        return await self.host.read(f"{handle['dir']}/{EXIT_FILE}") is not None

    async def _state(self, job_id: str) -> tuple[str | None, str]:
        code, out, _ = await self.host.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"],
                                           check=False)
        line = out.strip().splitlines()[0] if code == 0 and out.strip() else ""
        if not line:
            return None, ""
        state, _, reason = line.partition("|")
        return state, reason

    async def wait(self, handle: dict[str, Any], report: Report) -> tuple[int | None, str]:
        exit_path = f"{handle['dir']}/{EXIT_FILE}"
        job_id = await self._find(handle)
        while True:
            code = parse_status(await self.host.read(exit_path))
            if code is not None:
                return code, ""
            state, reason = await self._state(job_id) if job_id else (None, "")
            meaning = SQUEUE_STATES.get(state or "", JobState.UNKNOWN)
            if meaning is JobState.SCHEDULED:
                report(meaning, f"queued: {reason}" if reason else "queued")
            elif meaning is JobState.RUNNING:
                report(meaning, None)
            elif state is None or meaning is None:
                for _ in range(8):  # the status may reach a shared file system a bit later
                    code = parse_status(await self.host.read(exit_path))
                    if code is not None:
                        return code, ""
                    await asyncio.sleep(0.25)
                return None, f"its Slurm job {job_id} ended {state or 'and is gone'}"
            await asyncio.sleep(self.poll_interval)

    async def signal(self, handle: dict[str, Any], sig: int) -> None:
        job_id = await self._find(handle)
        if not job_id:
            return
        state, _ = await self._state(job_id)
        if sig == signal.SIGKILL or state == "PENDING":
            await self.host.run(["scancel", job_id], check=False)
        else:
            name = signal.Signals(sig).name.removeprefix("SIG")
            await self.host.run(["scancel", "--full", f"--signal={name}", job_id],
                                check=False)

