"""Tasks in Docker containers (the Docker SDK), one container per task.

The container ``everest-<task-id>`` runs the task's image (the app's ``config.image`` when
the resource allows it in ``images``, else the resource's ``image``) with the task folder
mounted at ``/task`` and ``/task/work`` as its working directory, as the resource's
non-root ``uid`` (default 65534, *nobody*), with all capabilities dropped,
``no-new-privileges``, the resource's ``memory``/``cpus``/``pids_limit`` and network
(``none`` by default, or ``host``). Its first process reads the arguments from
``/task/argv`` and runs the same wrapper as local tasks, which writes ``/task/exit``:
the server sees the end through the mount, without asking the engine. Cancel sends the
signal to every process in the container but the first (``kill -INT -1`` run inside it, as
the task's user); SIGKILL kills the container.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from everest_app.states import JobState
from everest_local.backends.base import Backend, BackendError, Report, TaskSpec, read_status
from everest_local.backends.hosts import chown_tree
from everest_local.processes import WRAPPER

MOUNT = "/task"
# PID 1 of the container: streams to files, then the wrapper with the arguments from argv
START = (f'cd {MOUNT}/work && exec </dev/null >stdout 2>stderr && '
         f'exec xargs -0 -x /bin/sh -c "$0" sh {MOUNT} < {MOUNT}/argv')
LIVENESS_EVERY = 2.0
NEVER_STARTED = "0001-01-01T00:00:00Z"


class DockerBackend(Backend):
    """A resource of kind ``docker``."""

    def __init__(self, resource: Any):
        super().__init__(resource)
        self.options = resource.options
        self._client: Any = None

    @property
    def client(self) -> Any:
        import docker

        if self._client is None:
            host = self.options.get("docker_host") or os.environ.get("DOCKER_HOST")
            self._client = (docker.DockerClient(base_url=host, timeout=60) if host
                            else docker.from_env(timeout=60))
        return self._client

    def image_for(self, spec: TaskSpec) -> str:
        """The image the job asks for if the resource allows it, else the resource's."""
        if not spec.image or spec.image == self.options["image"]:
            return self.options["image"]
        allowed = self.options.get("images") or []
        if spec.image not in allowed:
            raise BackendError(f"image {spec.image!r} is not allowed on {self.resource.name} "
                               f"(allowed: {', '.join([self.options['image'], *allowed])})")
        return spec.image

    def handle_for(self, spec: TaskSpec) -> dict[str, Any]:
        return {"container": f"everest-{spec.task_id}", "dir": str(spec.dir)}

    def _uid(self) -> tuple[int, int]:
        uid, _, gid = self.options["uid"].partition(":")
        return int(uid), int(gid or uid)

    async def launch(self, spec: TaskSpec, handle: dict[str, Any]) -> dict[str, Any]:
        await asyncio.to_thread(self._launch, spec, handle)
        return handle

    def _launch(self, spec: TaskSpec, handle: dict[str, Any]) -> None:
        import docker.errors

        uid, gid = self._uid()
        chown_tree(spec.dir, uid, gid)
        try:
            container = self._create(spec, handle, uid, gid)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            # a container left by a try that never started (removed only then: a look
            # before every create cost a request per task)
            self.client.api.remove_container(handle["container"], force=True)
            container = self._create(spec, handle, uid, gid)
        container.start()

    def _create(self, spec: TaskSpec, handle: dict[str, Any], uid: int, gid: int) -> Any:
        opts = self.options
        return self.client.containers.create(
            self.image_for(spec), ["/bin/sh", "-c", START, WRAPPER],
            name=handle["container"], user=f"{uid}:{gid}", working_dir=f"{MOUNT}/work",
            environment={k: v for k, v in spec.env.items() if k.startswith("EVEREST_")},
            volumes={str(spec.dir): {"bind": MOUNT, "mode": "rw"}},
            network_mode=opts.get("network", "none"), cap_drop=["ALL"],
            security_opt=["no-new-privileges"], mem_limit=opts.get("memory"),
            nano_cpus=int(opts["cpus"] * 1e9) if opts.get("cpus") else None,
            pids_limit=opts.get("pids_limit", 512),
            labels={"everest.task": spec.task_id, "everest.resource": self.resource.id})

    def _container(self, handle: dict[str, Any]) -> Any:
        import docker.errors

        try:
            return self.client.containers.get(handle["container"])
        except docker.errors.NotFound:
            return None

    async def started(self, handle: dict[str, Any]) -> bool:
        container = await asyncio.to_thread(self._container, handle)
        if container is None:
            return False
        if container.attrs["State"].get("StartedAt", NEVER_STARTED) == NEVER_STARTED:
            await asyncio.to_thread(container.remove, force=True)
            return False
        return True

    async def wait(self, handle: dict[str, Any], report: Report) -> tuple[int | None, str]:
        folder = Path(handle["dir"])
        report(JobState.RUNNING, None)
        checked = time.monotonic()
        pauses = self.pauses()
        while True:
            code = read_status(folder)
            if code is not None:
                return code, ""
            if time.monotonic() - checked > LIVENESS_EVERY:
                checked = time.monotonic()
                state = await asyncio.to_thread(self._state, handle)
                if state is None or state.get("Status") in ("exited", "dead"):
                    code = read_status(folder)
                    if code is not None:
                        return code, ""
                    if state is None:
                        return None, "its container is gone"
                    why = " (out of memory)" if state.get("OOMKilled") else ""
                    return state.get("ExitCode"), f"its container ended{why}"
            await asyncio.sleep(next(pauses))

    def _state(self, handle: dict[str, Any]) -> dict[str, Any] | None:
        container = self._container(handle)
        return container.attrs["State"] if container is not None else None

    async def signal(self, handle: dict[str, Any], sig: int) -> None:
        await asyncio.to_thread(self._signal, handle, sig)

    def _signal(self, handle: dict[str, Any], sig: int) -> None:
        import docker.errors

        container = self._container(handle)
        if container is None:
            return
        try:
            if sig == signal.SIGKILL:
                container.kill()
            else:
                uid, gid = self._uid()
                name = signal.Signals(sig).name.removeprefix("SIG")
                container.exec_run(["/bin/sh", "-c", f"kill -{name} -1"], user=f"{uid}:{gid}")
        except docker.errors.APIError:
            pass  # it ended meanwhile

    async def collect(self, handle: dict[str, Any], task_dir: Path) -> None:
        return None  # the work folder is mounted: outputs are already here

    async def remove(self, handle: dict[str, Any]) -> None:
        await asyncio.to_thread(self._remove, handle)

    def _remove(self, handle: dict[str, Any]) -> None:
        import docker.errors

        try:  # one request (a look first cost another before each job's end was recorded)
            self.client.api.remove_container(handle["container"], force=True)
        except docker.errors.NotFound:
            pass

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
