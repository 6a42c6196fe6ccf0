"""A session's start, written once: from the Everest job's state and the relay session's state,
what the user is told, whether the start is over, and what failed.

Both drivers — the terminal's :class:`launcher.launch.Launch` (blocking, requests) and the
hub's :class:`launcher.hub.spawner.EverestSpawner` (async, tornado) — fetch the two states their
own way and call :func:`step`; neither decides anything else. So the progress words, their
order and the failure rules are the same on every way in.

The milestones, in the order a start reaches them::

    submitted -> queued -> running -> runner -> tunnel -> ready
                 (job)     (job, or any relay state past waiting: the runner talks to it)

A milestone implies the ones before it (a fast job may be RUNNING at the first look, a tunnel
may be up before the job's RUNNING was seen), so :func:`step` returns every milestone reached,
in order, and each driver reports each one once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from everest_app.states import QUEUED_STATES, JobState
from launcher.relay.state import SessionState


class Milestone(enum.Enum):
    """A point a start reaches; its value is the hub's progress bar percentage."""

    SUBMITTED = 10
    QUEUED = 20
    RUNNING = 40
    RUNNER = 55
    TUNNEL = 70
    READY = 90

    @property
    def words(self) -> str:
        """What the user is told (``{job_id}``, ``{session_id}`` and ``{where}`` filled by
        :meth:`text`)."""
        return WORDS[self]

    def text(self, *, job_id: str = "", session_id: str = "", where: str = "") -> str:
        return self.words.format(job_id=job_id, session_id=session_id,
                                 where=where or "a resource")


WORDS: dict[Milestone, str] = {
    Milestone.SUBMITTED: "submitted to Everest as job {job_id}, relay session {session_id}",
    Milestone.QUEUED: "queued on {where}",
    Milestone.RUNNING: "running on the resource",
    Milestone.RUNNER: "session runner connected to the relay",
    Milestone.TUNNEL: "tunnel up; waiting for the notebook",
    Milestone.READY: "notebook up, reachable through the relay",
}
"""The one set of progress words (the hub shows them capitalised)."""

_BY_SESSION: dict[SessionState, Milestone] = {
    SessionState.STARTING: Milestone.RUNNER,
    SessionState.CONNECTED: Milestone.TUNNEL,
    SessionState.DISCONNECTED: Milestone.TUNNEL,  # it was up once; the runner reconnects
    SessionState.READY: Milestone.READY,
}


class Failure(enum.Enum):
    """Why a start is over without a URL."""

    JOB_ENDED = "job ended"            # the job is terminal: its log and reason explain
    RUNNER_STOPPED = "runner stopped"  # the relay session ended while the job still ran
    TICKET_EXPIRED = "ticket expired"  # the job did not start before its ticket expired

    def message(self, job_state: JobState | None = None, info: str = "") -> str:
        """One sentence for the user."""
        if self is Failure.JOB_ENDED:
            return (f"the job ended {job_state} before the notebook was reachable"
                    + (f": {info}" if info else ""))
        if self is Failure.TICKET_EXPIRED:
            return "the job did not start before its ticket expired"
        return "the session runner stopped before the notebook was reachable"


@dataclass(frozen=True)
class StartStep:
    """What one look at both states means."""

    reached: tuple[Milestone, ...]
    """Every milestone reached so far, in order (drivers report each once)."""
    url: str | None = None
    """Set when the start is over and succeeded: the session's URL."""
    failure: Failure | None = None
    """Set when the start is over and failed."""

    @property
    def finished(self) -> bool:
        return self.url is not None or self.failure is not None


def step(job_state: JobState | None, session_state: SessionState | None,
         session_url: str | None = None) -> StartStep:
    """The start's meaning given the job's state (None: not known this time, e.g. Everest did
    not answer) and the relay session's (None: a state this version does not know)."""
    highest = Milestone.SUBMITTED
    if job_state in QUEUED_STATES:
        highest = Milestone.QUEUED
    elif job_state == JobState.RUNNING:
        highest = Milestone.RUNNING
    by_session = _BY_SESSION.get(session_state) if session_state else None
    if by_session is not None and by_session.value > highest.value:
        highest = by_session
    reached = tuple(m for m in Milestone if m.value <= highest.value
                    and (m is not Milestone.QUEUED or job_state in QUEUED_STATES))
    if job_state is not None and job_state.is_terminal:  # whatever the relay last saw
        return StartStep(reached, failure=Failure.JOB_ENDED)
    if session_state is SessionState.READY and session_url:
        return StartStep(reached, url=session_url)
    if session_state is not None and not session_state.live:
        return StartStep(reached, failure=Failure.TICKET_EXPIRED
                         if session_state is SessionState.EXPIRED else Failure.RUNNER_STOPPED)
    return StartStep(reached)
