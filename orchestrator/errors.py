"""What a job future can fail with, besides the client's own :mod:`everest_app.errors`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from everest_app.job import Job

if TYPE_CHECKING:
    from concurrent.futures import Future


class JobFailed(Exception):
    """The job ended FAILED or CANCELLED (and its retries, if any, are used up).

    ``job`` is the job as the server last described it, ``info`` the server's reason and
    ``log_tail`` the last lines of the job's log (empty when the log could not be read).
    """

    def __init__(self, job: Job, log_tail: str = "", *, attempts: int = 1):
        self.job = job
        self.job_id = job.id
        self.state = job.state
        self.info = job.info or ""
        self.log_tail = log_tail
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        message = f"job {job.id} ({job.name}) ended {job.state}{tries}: {self.info or 'no info'}"
        if log_tail:
            message += "\n--- end of the job's log ---\n" + log_tail
        super().__init__(message)


class DependencyFailed(Exception):
    """A job this one waits for failed or was cancelled, so this one was never submitted.

    ``dependency`` is the failed future and ``cause`` its exception (a
    :class:`concurrent.futures.CancelledError` when it was cancelled).
    """

    def __init__(self, dependency: Future, cause: BaseException):
        self.dependency = dependency
        self.cause = cause
        name = getattr(dependency, "label", None) or repr(dependency)
        super().__init__(f"dependency {name} did not succeed: {type(cause).__name__}: {cause}")


class OrchestratorClosed(Exception):
    """The orchestrator was closed before this job ended.

    The job itself keeps running on the server; an orchestrator opened with the same journal
    re-attaches to it.
    """
