"""One background thread that watches every job of an orchestrator.

With few jobs in flight (at most ``list_threshold``) it asks for each job
(``GET /api/jobs/<id>``); with more it asks once per tick for the whole list
(``GET /api/jobs``) and picks its jobs out of it, fetching singly only a job the list lacks.
:class:`~orchestrator.cadence.Cadence` sets the pause between ticks. Requests go through the
client's keep-alive session.

Failures never reach a watcher: an HTTP or connection error backs the cadence off and the
tick is tried again. The one exception is a job the server keeps answering 404 for
(``lost_after`` ticks in a row: it was deleted), which is reported through ``on_lost``.
States the client does not know (``UNKNOWN``) count as not finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from everest_app.client import EverestClient
from everest_app.errors import EverestError, NotFoundError
from everest_app.job import Job
from everest_app.states import JobState
from orchestrator.cadence import Cadence

log = logging.getLogger(__name__)

OnUpdate = Callable[[Job], None]
OnLost = Callable[[str, Exception], None]


@dataclass
class _Watch:
    on_update: OnUpdate
    on_lost: OnLost
    last_state: JobState | None = None
    misses: int = 0


class Poller:
    """Watches jobs until they reach a terminal state. Thread-safe; start is lazy."""

    def __init__(self, client: EverestClient, cadence: Cadence | None = None, *,
                 list_threshold: int = 3, lost_after: int = 5):
        self.client = client
        self.cadence = cadence or Cadence()
        self.list_threshold = list_threshold
        self.lost_after = lost_after
        self.requests: Counter[str] = Counter()
        self._watched: dict[str, _Watch] = {}
        self._cond = threading.Condition()
        self._kick = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._last_warning = 0.0

    def __len__(self) -> int:
        with self._cond:
            return len(self._watched)

    def watch(self, job_id: str, on_update: OnUpdate, on_lost: OnLost) -> None:
        """Call ``on_update(job)`` on each new state of the job, the last one terminal.

        Callbacks run on the poller thread and must be quick. ``on_lost(job_id, error)``
        is called instead if the job disappears from the server.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("poller is closed")
            self._watched[job_id] = _Watch(on_update, on_lost)
            self._kick = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="everest-poller",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def unwatch(self, job_id: str) -> None:
        """Stop watching a job; no callback follows."""
        with self._cond:
            self._watched.pop(job_id, None)

    def close(self, timeout: float = 10) -> None:
        """Stop the thread; watchers get no further callbacks."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ------------------------------------------------------------------------

    def _take_kick(self) -> None:
        """Called with the lock held: new jobs while few are watched mean look soon."""
        if self._kick:
            self._kick = False
            if len(self._watched) <= self.list_threshold:
                self.cadence.on_new_jobs()

    def _wait_for_tick(self) -> list[str] | None:
        """Sleep until the next tick is due; the ids to poll, or None when closed."""
        with self._cond:
            while not self._watched and not self._closed:
                self._cond.wait()
            self._take_kick()
            deadline = time.monotonic() + self.cadence.interval
            while not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                if self._kick:
                    self._take_kick()
                    deadline = min(deadline, time.monotonic() + self.cadence.interval)
            if self._closed:
                return None
            return list(self._watched)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            ids = self._wait_for_tick()
            if ids is None:
                return
            if not ids:
                continue
            now = time.monotonic()
            elapsed, last = now - last, now
            listing = len(ids) > self.list_threshold
            try:
                jobs = self._fetch(ids, listing)
            except EverestError as exc:
                self.cadence.after_error()
                self._note_error(exc)
                continue
            except Exception:  # a bug must not stop every future: log and keep polling
                log.exception("poller tick failed")
                self.cadence.after_error()
                continue
            self._note_recovery()
            finished = self._deliver(jobs)
            self.cadence.after_tick(finished=finished, in_flight=len(self), elapsed=elapsed,
                                    listing=listing)

    def _fetch(self, ids: list[str], listing: bool) -> dict[str, Job | Exception]:
        """The current description of each job (or its NotFoundError)."""
        found: dict[str, Job | Exception] = {}
        singles = ids
        if listing:
            self.requests["list"] += 1
            wanted = set(ids)
            for job in self.client.jobs():
                if job.id in wanted:
                    found[job.id] = job
            singles = [i for i in ids if i not in found]
        for job_id in singles:
            self.requests["get"] += 1
            try:
                found[job_id] = self.client.job(job_id)
            except NotFoundError as exc:
                found[job_id] = exc
        return found

    def _deliver(self, jobs: dict[str, Job | Exception]) -> int:
        """Hand new states to their watchers; returns how many jobs ended."""
        finished = 0
        for job_id, job in jobs.items():
            with self._cond:
                watch = self._watched.get(job_id)
                if watch is None:
                    continue
                if isinstance(job, Exception):
                    watch.misses += 1
                    if watch.misses < self.lost_after:
                        continue
                    del self._watched[job_id]
                    callback, arg = watch.on_lost, job
                else:
                    watch.misses = 0
                    if job.state == watch.last_state and not job.is_done:
                        continue
                    watch.last_state = job.state
                    if job.is_done:
                        del self._watched[job_id]
                        finished += 1
                    callback, arg = watch.on_update, job
            try:
                if isinstance(arg, Exception):
                    callback(job_id, arg)
                else:
                    callback(arg)
            except Exception:
                log.exception("callback for job %s failed", job_id)
        return finished

    def _note_error(self, exc: EverestError) -> None:
        self.requests["errors"] += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_warning > 30:
            self._last_warning = now
            log.warning("polling Everest failed (%s); retrying in %.2f s — jobs are not "
                        "affected", exc, self.cadence.interval)

    def _note_recovery(self) -> None:
        if self._failing_since is not None:
            log.info("polling Everest works again after %.1f s",
                     time.monotonic() - self._failing_since)
            self._failing_since = None
            self._last_warning = 0.0
