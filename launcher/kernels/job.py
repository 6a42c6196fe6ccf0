"""One kernel's Everest job: whom to ask, how it starts, its control calls, how it ends.

The job is the ``jupyter-session`` application in kernel mode: the relay sees an ordinary
session (``/session/<id>/``, probed at ``api/status`` until the kernel answers), the launch
flow is the sessions' own (:class:`launcher.launch.Launch`), and the runner is
``agent_scripts/runner_kernel.py``. Who the user is comes from where every other command
takes it: ``--everest``-style settings in the kernelspec, else the profile, ``EVEREST_TOKEN``
or ``EVEREST_TASK_TOKEN`` (inside a session), else the embedded local server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from everest_app import config as app_config
from everest_app.client import EverestClient
from everest_app.errors import AuthError, EverestError, NotFoundError
from launcher.kernels.bridge import Target
from launcher.launch import Launch, LaunchFailed, stop_session
from launcher.launch_options import LaunchOptions
from launcher.relay.client import RelayClient
from launcher.relay.state import SessionState

log = logging.getLogger(__name__)

KERNEL_MODE = "kernel"


class KernelJobFailed(RuntimeError):
    """The kernel's job did not start or stopped; the message says why (Everest's reason,
    the runner's last lines)."""


class ControlError(RuntimeError):
    """A control call failed: ``status`` is the HTTP status (599: no answer at all)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """The Everest to submit to, the relay to go through, and the user's token."""

    everest_url: str
    relay_url: str
    token: str


def credentials(everest_url: str | None = None, relay_url: str | None = None,
                profile: str | None = None, *, start: bool = True) -> Credentials:
    """Resolve who the user is, as the CLI does: the given Everest or the profile's (token
    from ``EVEREST_TOKEN``/``EVEREST_TASK_TOKEN`` or the stored one), else the embedded
    local server (started if it does not run, unless ``start`` is False). Raises
    :class:`EverestError`."""
    prof = app_config.load_profile(profile or None, url=everest_url or None)
    if prof.url:
        relay = relay_url or prof.relay_url
        if not relay:
            raise app_config.ConfigError(
                f"no relay for {prof.url}: set relay_url in the kernelspec "
                "(everest-jupyter kernels install --relay URL), EVEREST_RELAY_URL, or the "
                f"profile '{prof.name}'")
        if not prof.token:
            raise AuthError(f"not logged in to {prof.url}: run everest-jupyter login, or set "
                            "EVEREST_TOKEN")
        return Credentials(prof.url, relay, prof.token)
    from launcher import embedded

    if not start and embedded.running() is None:
        raise embedded.not_running_error()
    emb = embedded.ensure()
    return Credentials(emb.url, relay_url or emb.relay_url, emb.token)


class KernelJobOptions(LaunchOptions):
    """A kernel job's options: a session's, with the runner in kernel mode. The relay's
    session stays an ordinary one; ``idle_timeout`` is the runner's lease (how long it
    waits for the lab to check in before it ends the job)."""

    def inputs(self, relay_url: str, ticket: str, everest_url: str,
               base_url: str | None = None) -> dict[str, Any]:
        inputs = super().inputs(relay_url, ticket, everest_url)  # no JupyterLab to start
        inputs["mode"] = KERNEL_MODE
        return inputs


class KernelJob:
    """One kernel's job. :meth:`start` (blocking) submits it and returns the kernel's
    :class:`Target` once the kernel answers through the relay; :meth:`control` (async)
    calls the runner; :meth:`end` (blocking) cancels the job and ends the relay session."""

    def __init__(self, creds: Credentials, options: KernelJobOptions,
                 progress: Callable[[str], None] = lambda msg: None):
        self.creds = creds
        self.options = options
        self.progress = progress
        self.everest = EverestClient(creds.everest_url, creds.token)
        self.relay = RelayClient(creds.relay_url, creds.token)
        self.job_id: str | None = None
        self.session_id: str | None = None
        self.target: Target | None = None

    def start(self) -> Target:
        run = Launch(self.everest, self.relay, self.options, progress=self.progress)
        try:
            launched = run.run()
        except LaunchFailed as exc:
            self.job_id, self.session_id = run.job_id, run.session_id
            raise KernelJobFailed(_failure_text(exc)) from None
        except EverestError as exc:  # refused at submit (a bad resource, image, token)
            self.job_id, self.session_id = run.job_id, run.session_id
            run.stop(wait=10)
            raise KernelJobFailed(str(exc)) from None
        except BaseException:
            self.job_id, self.session_id = run.job_id, run.session_id
            run.stop(wait=10)  # interrupted half-way: leave nothing behind
            raise
        self.job_id, self.session_id = launched.job_id, launched.session_id
        self.target = Target.from_url(launched.url)
        return self.target

    def attach(self, job_id: str, session_id: str) -> Target:
        """Take over a live job (a restarted lab); raises :class:`KernelJobFailed` when it
        no longer runs."""
        self.job_id, self.session_id = job_id, session_id
        try:
            view = self.relay.session(session_id)
        except EverestError as exc:
            raise KernelJobFailed(f"kernel session {session_id}: {exc}") from None
        if SessionState.known(view.get("state")) not in (SessionState.READY,
                                                          SessionState.CONNECTED,
                                                          SessionState.DISCONNECTED):
            raise KernelJobFailed(f"kernel session {session_id} is {view.get('state')}")
        self.target = Target.from_url(view["url"])
        return self.target

    def running(self) -> bool:
        """Whether the job still runs (False when it ended or Everest forgot it)."""
        if not self.job_id:
            return False
        try:
            return not self.everest.job(self.job_id).is_done
        except NotFoundError:
            return False

    def failure(self) -> str:
        """Why the job ended: Everest's state and reason, and the runner's last lines."""
        if not self.job_id:
            return "the kernel's job was never submitted"
        try:
            job = self.everest.job(self.job_id)
        except EverestError as exc:
            return f"job {self.job_id}: {exc}"
        text = f"the kernel's job {self.job_id} is {job.state}"
        if job.info:
            text += f": {job.info}"
        uri = (job.result or {}).get("log")
        if isinstance(uri, str) and uri:
            try:
                lines = self.everest.read(uri).decode("utf-8", "replace").splitlines()
                text += "\n--- the runner's last lines ---\n" + "\n".join(lines[-15:])
            except EverestError:
                pass
        return text

    def end(self, wait: float = 30.0) -> str | None:
        """Cancel the job, end the relay session; the job's final state (None: unknown)."""
        return stop_session(self.everest, self.relay, self.job_id, self.session_id, wait=wait)

    async def control(self, method: str, route: str, timeout: float = 30.0
                      ) -> dict[str, Any]:
        """Call the runner's control endpoint (``api/status``, ``api/kernel/...``)."""
        target = self.target
        if target is None:
            raise ControlError("the kernel has no job", 599)
        request = HTTPRequest(target.base + route, method=method,
                              body=b"" if method == "POST" else None,
                              headers={"Authorization": f"token {target.token}"},
                              connect_timeout=min(timeout, 10), request_timeout=timeout,
                              validate_cert=True)
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            message = str(exc)
            if exc.response is not None and exc.response.body:
                try:
                    message = json.loads(exc.response.body)["message"]
                except (ValueError, KeyError, TypeError):
                    pass
            raise ControlError(message, exc.code) from None
        except OSError as exc:
            raise ControlError(str(exc), 599) from None
        return json.loads(response.body or b"{}")


def _failure_text(exc: LaunchFailed) -> str:
    text = str(exc)
    if exc.log:
        text += "\n" + "\n".join(exc.log.rstrip().splitlines()[-25:])
    return text
