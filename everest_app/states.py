"""Everest job states and the one table of moves between them.

Everest reports a job's state as an upper-case string. The client maps it to
:class:`JobState`; a string it does not know becomes :attr:`JobState.UNKNOWN`, which
counts as *not finished* — a newer server adding a state must never break a client.

:data:`JOB_TRANSITIONS` is the whole state machine of a job: the local server's store
refuses (and logs) any move not in it (:func:`can_move`), and the web UI reads the
terminal and queued sets from a module the server writes from this file.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class JobState(str, enum.Enum):
    """The life cycle of an Everest job, in the order a job normally passes through it."""

    SUBMITTED = "SUBMITTED"
    DEFERRED = "DEFERRED"
    READY = "READY"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: str | JobState | None) -> JobState:
        """Map a server's state string to a state; anything unrecognised is ``UNKNOWN``."""
        if isinstance(value, JobState):
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """True for DONE, FAILED and CANCELLED: the job will not change again."""
        return self in TERMINAL_STATES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
)
"""States a job never leaves."""

FAILURE_STATES: frozenset[JobState] = frozenset({JobState.FAILED, JobState.CANCELLED})
"""Terminal states that carry no usable result."""

ACTIVE_STATES: frozenset[JobState] = frozenset(JobState) - TERMINAL_STATES
"""States in which a job may still change, UNKNOWN included."""

QUEUED_STATES: frozenset[JobState] = frozenset(
    {JobState.SUBMITTED, JobState.DEFERRED, JobState.READY, JobState.SCHEDULED}
)
"""States of a job that waits for its resource: accepted, not running yet."""

_J = JobState
_ENDS = TERMINAL_STATES

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # Everest's own early states; the local server starts jobs at READY
    _J.SUBMITTED: frozenset({_J.SUBMITTED, _J.DEFERRED, _J.READY, _J.SCHEDULED, _J.RUNNING})
    | _ENDS,
    _J.DEFERRED: frozenset({_J.DEFERRED, _J.READY, _J.SCHEDULED, _J.RUNNING}) | _ENDS,
    # queued for a slot: a task is made (SCHEDULED), or the job is cancelled, or it cannot
    # run at all (FAILED: its application or resource is gone)
    _J.READY: frozenset({_J.READY, _J.SCHEDULED}) | _ENDS,
    # a task is being staged or waits in a resource's own queue; READY again when the
    # server restarted before it ran, or a failed attempt is retried
    _J.SCHEDULED: frozenset({_J.SCHEDULED, _J.RUNNING, _J.READY}) | _ENDS,
    # SCHEDULED again when a resource (Slurm) requeues the task; READY for a retry
    _J.RUNNING: frozenset({_J.RUNNING, _J.SCHEDULED, _J.READY}) | _ENDS,
    _J.DONE: frozenset(),
    _J.FAILED: frozenset(),
    _J.CANCELLED: frozenset(),
    # a state a client could not read may turn out to be any state
    _J.UNKNOWN: frozenset(JobState) - {_J.UNKNOWN},
}
"""The only moves a job may make: ``JOB_TRANSITIONS[from]`` holds the states it may enter
(staying in an unfinished state, with new info, counts as a move to itself)."""


def can_move(job_id: str, old: JobState | str, new: JobState | str) -> bool:
    """Whether the table allows ``old -> new``; a refused move is logged with its job."""
    old, new = JobState.parse(old), JobState.parse(new)
    if new in JOB_TRANSITIONS[old]:
        return True
    log.warning("job %s: refused the move %s -> %s", job_id, old.value, new.value)
    return False


class TaskState(str, enum.Enum):
    """The life of one task (one attempt at running a job) on the local server.

    STAGING (work folder being prepared) -> RUNNING -> DONE, FAILED or CANCELLED; the
    final three are named like the job states they lead to.
    """

    STAGING = "STAGING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskState.STAGING, TaskState.RUNNING)

    def __str__(self) -> str:
        return self.value
