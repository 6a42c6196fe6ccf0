"""Everest job states.

Everest reports a job's state as an upper-case string. The client maps it to
:class:`JobState`; a string it does not know becomes :attr:`JobState.UNKNOWN`, which
counts as *not finished* — a newer server adding a state must never break a client.
"""

from __future__ import annotations

import enum


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
