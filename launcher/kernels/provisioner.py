"""``EverestProvisioner``: a kernel that runs as an Everest job, for any JupyterLab.

Registered as ``everest`` (entry point group ``jupyter_client.kernel_provisioners``); a
kernelspec picks it with ``metadata.kernel_provisioner = {"provisioner_name": "everest",
"config": {"resource": ..., ...}}`` (``everest-jupyter kernels install`` writes one).

The life of a kernel, in the terms of :class:`KernelProvisionerBase`:

- ``launch_kernel``: submit the job (:class:`~launcher.kernels.job.KernelJob`), progress in
  the server's log, wait until the kernel answers through the relay, then listen on five
  local ports bridged to it (:class:`~launcher.kernels.bridge.PortBridge`); the connection
  info names those ports and the key the runner made. A start that fails raises with
  Everest's reason and the runner's last lines, which JupyterLab shows.
- ``send_signal(SIGINT)``: the runner's ``api/kernel/interrupt`` (interrupt mode ``signal``).
- a restart: ``kill``/``terminate(restart=True)`` end the kernel process only, and
  ``launch_kernel`` asks the runner for a new one in the same job when the job still runs
  (a new job otherwise, on the same local ports).
- shutdown: ``cleanup`` ends the job and the relay session and waits for the job to end.
- ``poll``: the runner's ``api/status`` — which is also the lab checking in (the runner ends
  its job when the lab has not for ``lease`` seconds). A job that ended, or a relay that
  stays unreachable for ``unreachable_after`` seconds, reads as a dead kernel.
- ``get_provisioner_info``/``load_provisioner_info``: the job and session, so a restarted
  server that keeps its kernels re-attaches to them; a lab that was killed leaves a
  :mod:`~launcher.kernels.ledger` entry, and the next one ends the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from tornado import web

from launcher.kernels import ledger
from launcher.kernels.bridge import PortBridge
from launcher.kernels.job import (
    ControlError,
    KernelJob,
    KernelJobFailed,
    KernelJobOptions,
    credentials,
)
from launcher.kernels.settings import KernelSettings

_swept = False


class EverestProvisioner(KernelProvisionerBase, KernelSettings):  # type: ignore[misc]
    """A kernel as an Everest job (see the module docstring). Its settings
    (:class:`~launcher.kernels.settings.KernelSettings`) come from the kernelspec's
    ``metadata.kernel_provisioner.config``."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.job: KernelJob | None = None
        self.bridge: PortBridge | None = None
        self._exit_code: int | None = None  # set once the job is over
        self._over = False  # the job was ended (by us or on its own)
        self._unreachable_since: float | None = None
        self._status: dict[str, Any] = {}

    # -- what the kernel manager asks ---------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.job is not None and self._exit_code is None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        global _swept
        if not _swept:
            _swept = True
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, self._sweep)
        kwargs.pop("extra_arguments", None)
        return await super().pre_launch(cmd=list(self.kernel_spec.argv), **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        if self.job is not None and not self._over:  # a restart: same job if it runs
            try:
                self._status = await self.job.control("POST", "api/kernel/restart",
                                                      timeout=180)
                self.log.info("everest kernel %s: restarted in job %s", self.kernel_id,
                              self.job.job_id)
                return self.connection_info
            except ControlError as exc:
                self.log.warning("everest kernel %s: restart in job %s failed (%s); "
                                 "starting a new job", self.kernel_id, self.job.job_id, exc)
                await self._end_job()
        return await self._start_job()

    async def poll(self) -> int | None:
        if self.job is None:
            return 1
        if self._exit_code is not None:
            return self._exit_code
        try:
            self._status = await self.job.control("GET", "api/status", timeout=10)
        except ControlError as exc:
            return await self._unreachable(exc)
        self._unreachable_since = None
        if self._status.get("kernel") == "alive":
            return None
        code = self._status.get("exit_code")
        return code if isinstance(code, int) else 1

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.1)
        return code

    async def send_signal(self, signum: int) -> None:
        if self.job is None or self._exit_code is not None:
            return
        if signum == signal.SIGINT:
            with contextlib.suppress(ControlError):
                self._status = await self.job.control("POST", "api/kernel/interrupt")
        elif signum in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            await self.kill(restart=True)
        elif signum == 0:
            await self.poll()

    async def kill(self, restart: bool = False) -> None:
        if self.job is None or self._exit_code is not None:
            return
        if restart:
            try:
                self._status = await self.job.control("POST", "api/kernel/kill", timeout=60)
            except ControlError as exc:
                self.log.warning("everest kernel %s: kill failed (%s)", self.kernel_id, exc)
        else:
            await self._end_job()

    async def terminate(self, restart: bool = False) -> None:
        await self.kill(restart=restart)

    async def cleanup(self, restart: bool = False) -> None:
        if restart:
            return
        await self._end_job()
        if self.bridge is not None:
            await self.bridge.close()
            self.bridge = None

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 10.0)  # each poll is a round trip through the relay

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 30.0)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update({
            "job_id": self.job.job_id if self.job else None,
            "session_id": self.job.session_id if self.job else None,
            "ports": dict(self.bridge.ports) if self.bridge else None})
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        """Re-attach to a kernel a previous server process started, if its job still runs;
        else end it (the kernel reads as dead)."""
        await super().load_provisioner_info(provisioner_info)
        job = self._new_job()
        job_id, session_id = provisioner_info.get("job_id"), provisioner_info.get("session_id")
        self.job = job
        try:
            target = await asyncio.get_running_loop().run_in_executor(
                None, job.attach, job_id, session_id)
        except KernelJobFailed as exc:
            self.log.warning("everest kernel %s: %s; ending its job", self.kernel_id, exc)
            await self._end_job()
            return
        self.bridge = PortBridge(target)
        ports = await self.bridge.start(provisioner_info.get("ports") or None)
        self.connection_info = {**self.connection_info,
                                **{f"{c}_port": p for c, p in ports.items()}}
        self._remember()

    # -- the job ------------------------------------------------------------------------------

    def _new_job(self) -> KernelJob:
        creds = credentials(self.everest_url, self.relay_url, self.profile)
        name = f"kernel {self.kernel_spec.display_name}" if self.kernel_spec else "kernel"
        options = KernelJobOptions(resource=self.resource, image=self.image,
                                   workspace=self.workspace or "",
                                   packages=list(self.packages), time_limit=self.time_limit,
                                   idle_timeout=self.lease, name=name[:100], app=self.app,
                                   default_url="/", timeout=self.start_timeout)
        return KernelJob(creds, options, progress=self._progress)

    def _progress(self, text: str) -> None:
        self.log.info("everest kernel %s: %s", self.kernel_id, text)

    async def _start_job(self) -> KernelConnectionInfo:
        loop = asyncio.get_running_loop()
        self._exit_code = None
        self._over = False
        self._unreachable_since = None
        job = await loop.run_in_executor(None, self._new_job)
        self.job = job
        self._progress(f"submitting to {job.creds.everest_url}"
                       + (f" (resource {self.resource})" if self.resource else ""))
        try:
            target = await loop.run_in_executor(None, job.start)
        except KernelJobFailed as exc:
            self._exit_code = 1
            self._over = True
            ledger.forget(str(self.kernel_id))
            self.log.error("everest kernel %s did not start: %s", self.kernel_id, exc)
            # jupyter_server answers an HTTPError with its message, which JupyterLab shows
            raise web.HTTPError(502, f"The Everest kernel did not start: {exc}".replace(
                "%", "%%"), reason="The Everest kernel did not start") from None
        self._remember()
        status = await job.control("GET", "api/status")
        if self.bridge is None:
            self.bridge = PortBridge(target)
            await self.bridge.start()
        else:
            self.bridge.retarget(target)
        self._progress(f"kernel up on {status.get('hostname')} (job {job.job_id}); "
                       f"local ports {sorted(self.bridge.ports.values())}")
        self.connection_info = {
            "ip": "127.0.0.1", "transport": "tcp",
            "key": str(status["key"]).encode(), "signature_scheme": status["signature_scheme"],
            **{f"{c}_port": p for c, p in self.bridge.ports.items()}}
        return self.connection_info

    async def _end_job(self) -> None:
        job = self.job
        if job is None or self._over:
            ledger.forget(str(self.kernel_id))
            return
        self._over = True
        self._exit_code = self._exit_code if self._exit_code is not None else 0
        with contextlib.suppress(ControlError):
            await job.control("POST", "api/kernel/shutdown", timeout=5)
        state = await asyncio.get_running_loop().run_in_executor(None, job.end, 30.0)
        self.log.info("everest kernel %s: job %s ended (%s)", self.kernel_id, job.job_id,
                      state)
        ledger.forget(str(self.kernel_id))

    async def _unreachable(self, exc: ControlError) -> int | None:
        """The runner did not answer: dead if the job ended (or the relay says the session
        did), or when it has not answered for ``unreachable_after`` seconds."""
        job = self.job
        ended = exc.status == 404  # the relay: no live session
        if not ended:
            now = time.monotonic()
            self._unreachable_since = self._unreachable_since or now
            if now - self._unreachable_since < self.unreachable_after:
                return None
        running = await asyncio.get_running_loop().run_in_executor(None, job.running)
        if running and not ended:
            self.log.error("everest kernel %s: its runner has not answered for %.0f s (%s); "
                           "ending job %s", self.kernel_id, self.unreachable_after, exc,
                           job.job_id)
        else:
            why = await asyncio.get_running_loop().run_in_executor(None, job.failure)
            self.log.error("everest kernel %s: %s", self.kernel_id, why)
        await self._end_job()
        self._exit_code = 1
        return 1

    def _remember(self) -> None:
        job = self.job
        ledger.record(str(self.kernel_id), {
            "job_id": job.job_id, "session_id": job.session_id,
            "everest_url": self.everest_url, "relay_url": self.relay_url,
            "profile": self.profile})

    def _sweep(self) -> None:
        try:
            ended = ledger.sweep()
        except Exception as exc:  # noqa: BLE001 - a failed sweep must not fail a start
            self.log.warning("everest kernels: sweeping orphaned jobs failed: %s", exc)
            return
        if ended:
            self.log.info("everest kernels: ended %d job(s) of labs that are gone: %s",
                          len(ended), ", ".join(ended))
