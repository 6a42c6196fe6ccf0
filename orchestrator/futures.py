"""The futures the orchestrator hands out: one per Everest job.

A :class:`JobFuture` is a real :class:`concurrent.futures.Future`, so ``wait``,
``as_completed`` and done-callbacks work as usual. It stays *pending* until the job ends (a
pending future can always be cancelled, and cancelling it cancels the job); ``running()``
says whether the job has been submitted.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from everest_app.job import Job
from everest_app.states import JobState


class Submitter(Protocol):
    """What submits jobs and hands back their futures (an :class:`orchestrator.Orchestrator`):
    actors and executors need only this, so they do not import the engine that runs them."""

    def submit(self, app: str, inputs: dict[str, Any] | None = None,
               **options: Any) -> JobFuture: ...


class JobFuture(concurrent.futures.Future):
    """The future result (the job's ``result`` object) of one Everest job.

    Its exception is a :class:`~orchestrator.errors.JobFailed` when the job failed,
    a :class:`~orchestrator.errors.DependencyFailed` when a job it waits for failed, or the
    client's error when the server refused the submission.
    """

    def __init__(self, app: str, key: str, label: str,
                 on_cancel: Callable[[JobFuture], None] | None = None):
        super().__init__()
        self.app = app
        self.key = key
        self.label = label
        self.job_id: str | None = None
        self.job: Job | None = None
        self.attempts = 0
        self._on_cancel = on_cancel

    @property
    def state(self) -> JobState | None:
        """The job's last known state; ``None`` before it is submitted."""
        return self.job.state if self.job is not None else None

    def running(self) -> bool:
        """True once the job is submitted and until its future is done."""
        return self.job_id is not None and not self.done()

    def cancel(self) -> bool:
        """Cancel the future and, if it was submitted, its job. False if already done."""
        cancelled = super().cancel()
        if cancelled and self._on_cancel is not None:
            self._on_cancel(self)
        return cancelled

    def output(self, name: str) -> OutputRef:
        """A reference to one named output, to pass as another job's input (a DAG edge)."""
        return OutputRef(self, name)

    def __repr__(self) -> str:
        if self.done():
            status = "cancelled" if self.cancelled() else (
                "failed" if self.exception() is not None else "done")
        else:
            status = str(self.state or "waiting")
        job = f" job={self.job_id}" if self.job_id else ""
        return f"<JobFuture {self.label}{job} {status}>"


@dataclass(frozen=True)
class OutputRef:
    """One named output of a job's future, or an item of it: resolves to that value.

    ``ref[i]`` selects item ``i`` of an array output (``future.output("files")[0]``).
    """

    future: JobFuture
    name: str
    index: tuple[int | str, ...] = ()

    def __getitem__(self, item: int | str) -> OutputRef:
        return OutputRef(self.future, self.name, self.index + (item,))

    def value(self) -> Any:
        """The output's value; the future must be done and successful.

        Raises ``KeyError`` naming the output when the job's result lacks it, and
        ``IndexError``/``KeyError`` when an item selected with ``[]`` is missing.
        """
        result = self.future.result()
        if self.name not in (result or {}):
            raise KeyError(f"job {self.future.job_id} ({self.future.label}) has no output "
                           f"{self.name!r}; it has {sorted(result or {})}")
        value = result[self.name]
        for item in self.index:
            try:
                value = value[item]
            except (IndexError, KeyError, TypeError) as exc:
                raise type(exc)(f"output {self.name!r} of job {self.future.job_id} has no "
                                f"item {list(self.index)}: {exc}") from exc
        return value


def as_completed(futures: Iterable[concurrent.futures.Future],
                 timeout: float | None = None) -> Iterator[concurrent.futures.Future]:
    """Yield the futures as they finish (done, failed or cancelled), first finished first.

    Raises ``TimeoutError`` when ``timeout`` seconds pass before all are done.
    """
    return concurrent.futures.as_completed(futures, timeout=timeout)
