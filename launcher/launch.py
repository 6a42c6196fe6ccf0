"""The launch flow: a JupyterLab session as an Everest job, until its URL works.

0. Upload the local packages and requirements file the user named
   (:mod:`launcher.packages`): they travel as file inputs.
1. Ask the relay for a session: a one-time ticket, the session id.
2. Submit the ``jupyter-session`` application with the ticket, the relay's address and the
   user's choices; tell the relay the job's id.
3. Follow both sides until the relay has probed the notebook through the tunnel — the
   relay's state by long-poll (an answer as soon as it changes), the job's state by polling —
   reporting the milestones of :mod:`launcher.session_start` (the same words the hub shows).
   If the job ends first, its log explains why (:class:`LaunchFailed` carries it).
4. Return the URL (with the notebook's token). :func:`stop_session` ends a session: it
   cancels the job (the runner then shuts JupyterLab and its kernels down) and ends the
   relay's session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from everest_app.client import EverestClient
from everest_app.errors import BadRequestError, EverestError, NotFoundError
from everest_app.job import Job
from everest_app.states import JobState
from launcher.launch_options import LaunchOptions
from launcher.packages import LocalPackages
from launcher.relay.client import RelayClient
from launcher.relay.state import SessionState
from launcher.session_start import Failure, Milestone, step

log = logging.getLogger(__name__)

class LaunchFailed(EverestError):
    """The session did not come up; ``log`` holds the job's log when there is one."""

    def __init__(self, message: str, *, job_id: str | None = None, log_text: str = ""):
        super().__init__(message)
        self.job_id = job_id
        self.log = log_text


@dataclass(frozen=True)
class Launched:
    url: str
    job_id: str
    session_id: str


class _Progress:
    """Report each milestone once, in order."""

    def __init__(self, report: Callable[[str], None]):
        self.report = report
        self.seen: set[Milestone] = set()

    def reached(self, milestones: tuple[Milestone, ...], **words: str) -> None:
        for milestone in milestones:
            if milestone not in self.seen:
                self.seen.add(milestone)
                self.report(milestone.text(**words))


class Launch:
    """One launch in progress. ``job_id`` and ``session_id`` are set as soon as they exist,
    so a caller interrupted half-way (Ctrl-C) can :meth:`stop` whatever was started."""

    def __init__(self, everest: EverestClient, relay: RelayClient, options: LaunchOptions,
                 progress: Callable[[str], None] = lambda msg: None):
        self.everest = everest
        self.relay = relay
        self.options = options
        self.progress = _Progress(progress)
        self.job_id: str | None = None
        self.session_id: str | None = None

    def run(self) -> Launched:
        """Run the launch flow (see the module docstring); returns once the URL works.

        Raises :class:`LaunchFailed` when the job ends, the session ends or
        ``options.timeout`` passes first (the job is cancelled then), and
        :class:`EverestError` for API failures.
        """
        opts = self.options
        local = LocalPackages.collect(list(opts.packages), opts.requirements)
        try:
            if local.files or local.requirements:
                self.progress.report("sending local packages: " + ", ".join(
                    [*local.files, *(["requirements.txt"] if local.requirements else [])]))
            local_inputs = local.inputs(self._upload)
        finally:
            local.close()
        try:
            session = self.relay.create_session(mode=opts.mode, label=opts.name or "",
                                                default_url=opts.default_url,
                                                workspace=opts.workspace or None,
                                                snapshot=opts.snapshot,
                                                read_only=opts.read_only)
        except BadRequestError as exc:
            if exc.status == 409 and opts.workspace:
                raise BadRequestError(
                    f"{exc.message}. Stop that session ('everest-jupyter stop ID'), or "
                    "open a copy (--read-only) or another workspace (--workspace NAME)",
                    status=409) from None
            raise
        self.session_id = sid = session["id"]
        inputs = opts.inputs(session["relay_url"], session["ticket"], self.everest.url,
                             session.get("base_url"))
        inputs.update(local_inputs)
        job = self.everest.submit(opts.app, inputs, name=opts.name or "jupyter-session",
                                  resources=[opts.resource] if opts.resource else None)
        self.job_id = job.id
        self.relay.set_job(sid, job.id)
        url = _wait_ready(self.everest, self.relay, job.id, sid, opts.timeout, self.progress,
                          where=opts.resource or "")
        return Launched(url=url, job_id=job.id, session_id=sid)

    def _upload(self, path: Path, name: str) -> str:
        return self.everest.upload(path, filename=name)["uri"]

    def stop(self, wait: float = 30.0) -> str | None:
        """Stop what this launch started (see :func:`stop_session`)."""
        return stop_session(self.everest, self.relay, self.job_id, self.session_id, wait=wait)


def _wait_ready(everest: EverestClient, relay: RelayClient, job_id: str, sid: str,
                timeout: float | None, progress: _Progress, where: str = "") -> str:
    """Follow the job (polled) and the relay session (long-polled) through
    :func:`launcher.session_start.step` until the URL works or the start fails."""
    deadline = None if timeout is None else time.monotonic() + timeout
    state: SessionState | None = SessionState.WAITING
    job: Job | None = None
    next_job_check = 0.0
    while True:
        now = time.monotonic()
        if now >= next_job_check:
            job = everest.job(job_id)
            next_job_check = now + 0.5
        session = relay.session(sid, unless_state=state, wait=0.5)
        state = SessionState.known(session.get("state"))
        outcome = step(job.state if job else None, state, session.get("url"))
        progress.reached(outcome.reached, job_id=job_id, session_id=sid, where=where)
        if outcome.url:
            return outcome.url
        if outcome.failure is Failure.JOB_ENDED:
            _fail_with_log(everest, relay, job, sid,
                           outcome.failure.message(job.state, job.info or ""))
        if outcome.failure is not None:
            stop_session(everest, relay, job_id, sid, wait=10)
            raise LaunchFailed(f"{outcome.failure.message()} (relay session {sid} {state})",
                               job_id=job_id)
        if deadline is not None and time.monotonic() > deadline:
            stop_session(everest, relay, job_id, sid, wait=10)
            raise LaunchFailed(f"the session was not ready within {timeout:g} s; job "
                               f"{job_id} cancelled", job_id=job_id)


def _fail_with_log(everest: EverestClient, relay: RelayClient, job: Job, sid: str,
                   message: str) -> None:
    """End the relay session and raise :class:`LaunchFailed` with the job's log and the
    tail of the runner's own log (its ``log`` output) when the job produced one."""
    try:
        relay.end(sid)
    except EverestError as exc:
        log.warning("could not end relay session %s: %s", sid, exc)
    try:
        text = everest.log(job.id)
    except EverestError as exc:
        text = f"(the job's log could not be read: {exc})"
    uri = (job.result or {}).get("log")
    if isinstance(uri, str) and uri:
        try:
            lines = everest.read(uri).decode("utf-8", "replace").splitlines()[-40:]
            text += "\n--- the session runner's log (last lines) ---\n" + "\n".join(lines)
        except EverestError as exc:
            log.info("the runner's log could not be read: %s", exc)
    raise LaunchFailed(message, job_id=job.id, log_text=text)


def stop_session(everest: EverestClient, relay: RelayClient, job_id: str | None,
                 session_id: str | None, *, wait: float = 30.0) -> str | None:
    """Cancel the session's job and end its relay session; wait up to ``wait`` s for the
    job to finish. Returns the job's final state (``None`` if unknown)."""
    final = None
    if job_id:
        try:
            everest.cancel(job_id)
            job = everest.wait(job_id, timeout=wait, interval=0.25) if wait > 0 else \
                everest.job(job_id)
            final = str(job.state)
        except NotFoundError:
            final = None
        except EverestError as exc:
            log.warning("job %s: %s", job_id, exc)
    if session_id:
        try:
            relay.end(session_id)
        except NotFoundError:
            pass
    return final


def follow(everest: EverestClient, relay: RelayClient, launched: Launched,
           report: Callable[[str], None] = lambda msg: None,
           interval: float = 2.0) -> JobState:
    """Block while the session runs, reporting tunnel drops and recoveries; returns the
    job's final state. ``KeyboardInterrupt`` is left to the caller."""
    state: SessionState | None = SessionState.READY
    while True:
        session = relay.session(launched.session_id, unless_state=state, wait=interval)
        if SessionState.known(session.get("state")) is not state:
            state = SessionState.known(session.get("state"))
            if state is SessionState.DISCONNECTED:
                report("tunnel down; the session runner reconnects")
            elif state is SessionState.READY:
                report("tunnel up again")
        job = everest.job(launched.job_id)
        if job.is_done:
            return job.state


def workspace_outcome(session: dict) -> str | None:
    """What a user is told about an ended session's workspace: saved (files, bytes) or
    NOT saved (why, and that its last saved state is kept); None without a workspace or
    before the runner reported."""
    ws = session.get("workspace") or {}
    report = ws.get("report")
    if not ws or not report or ws.get("read_only"):
        return None
    name = ws.get("name")
    if report.get("saved"):
        return (f"workspace {name} saved ({report.get('files', '?')} files, "
                f"{report.get('bytes', '?')} bytes)")
    return (f"workspace {name} was NOT saved at the end: {report.get('error') or 'unknown'}; "
            f"what was saved before is kept (everest-jupyter workspaces {name})")
