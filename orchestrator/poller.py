"""One background thread that watches every job of an orchestrator.

With few jobs in flight (see :meth:`Poller._many`) it asks for each job
(``GET /api/jobs/<id>``) on that job's own schedule; with more it asks once per tick for the
whole list (``GET /api/jobs``) and picks its jobs out of it, fetching singly only a job the
list lacks. :class:`~orchestrator.cadence.Cadence` sets the schedules. Requests go through
the client's keep-alive session.

Failures never reach a watcher: an HTTP or connection error backs off and the tick is tried
again. The one exception is a job the server keeps answering 404 for (``lost_after`` times in
a row: it was deleted), which is reported through ``on_lost``. States the client does not
know (``UNKNOWN``) count as not finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from everest_app.client import EverestClient
from everest_app.errors import EverestError, NotFoundError, ServerError
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
    group: str
    since: float
    next_at: float
    last_state: JobState | None = None
    last_pending_at: float | None = None
    misses: int = 0


class Poller:
    """Watches jobs until they reach a terminal state. Thread-safe; start is lazy.

    ``backlog`` (optional) tells how many jobs the owner has on their way (being submitted
    or watched): while many are coming, the list interval may be longer even if few are
    watched at the moment, since each list answer will then carry many results.
    """

    def __init__(self, client: EverestClient, cadence: Cadence | None = None, *,
                 list_threshold: int = 3, lost_after: int = 5,
                 backlog: Callable[[], int] | None = None):
        self.client = client
        self.backlog = backlog
        self.cadence = cadence or Cadence()
        self.list_threshold = list_threshold
        self.lost_after = lost_after
        self.requests: Counter[str] = Counter()
        self._watched: dict[str, _Watch] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._listing = False
        self._next_list = 0.0
        self._hold_until = 0.0
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._last_warning = 0.0

    def __len__(self) -> int:
        with self._cond:
            return len(self._watched)

    def watch(self, job_id: str, on_update: OnUpdate, on_lost: OnLost, *,
              group: str = "") -> None:
        """Call ``on_update(job)`` on each new state of the job, the last one terminal.

        ``group`` (the job's application) lets the schedule learn how long such jobs take.
        Callbacks run on the poller thread and must be quick. ``on_lost(job_id, error)``
        is called instead if the job disappears from the server.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("poller is closed")
            now = time.monotonic()
            self._watched[job_id] = _Watch(on_update, on_lost, group, now,
                                           now + self.cadence.first_poll(group))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="everest-poller",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def unwatch(self, job_id: str) -> None:
        """Stop watching a job; no callback follows."""
        with self._cond:
            self._watched.pop(job_id, None)

    def close(self, timeout: float = 10) -> bool:
        """Stop the thread; watchers get no further callbacks. Returns whether the thread
        has ended (False: it is still finishing a request after ``timeout`` seconds)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # -- the thread ------------------------------------------------------------------------

    def _many(self) -> bool:
        """With the lock held: whether to list. More watched jobs than ``list_threshold``,
        or at least two while the owner's backlog is that large (a bag of tasks that runs
        as fast as it is submitted: one list per tick beats a GET per job)."""
        watched = len(self._watched)
        if watched > self.list_threshold:
            return True
        backlog = self.backlog() if self.backlog is not None else 0
        return watched >= 2 and backlog > self.list_threshold

    def _next_tick(self) -> tuple[list[str], bool] | None:
        """Sleep until a tick is due; the ids to ask about and whether to list, or None
        when closed. Called and returns without the lock held."""
        with self._cond:
            while not self._closed:
                if not self._watched:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                many = self._many()
                if many and not self._listing:
                    self.cadence.start_listing()
                    self._next_list = now + self.cadence.interval
                self._listing = many
                due = (self._next_list if many
                       else min(w.next_at for w in self._watched.values()))
                due = max(due, self._hold_until)
                if due <= now:
                    if many:
                        return list(self._watched), True
                    return [i for i, w in self._watched.items() if w.next_at <= now], False
                self._cond.wait(due - now)
            return None

    def _run(self) -> None:
        last_list = time.monotonic()
        while True:
            tick = self._next_tick()
            if tick is None:
                return
            ids, listing = tick
            try:
                jobs = self._fetch(ids, listing)
            except EverestError as exc:
                with self._cond:
                    pause = self.cadence.after_error()
                    self._hold_until = time.monotonic() + pause
                self._note_error(exc, pause)
                continue
            except Exception:  # a bug must not stop every future: log and keep polling
                log.exception("poller tick failed")
                with self._cond:
                    self._hold_until = time.monotonic() + self.cadence.after_error()
                continue
            self._note_recovery()
            finished = self._deliver(jobs)
            if listing:
                now = time.monotonic()
                backlog = self.backlog() if self.backlog is not None else 0
                with self._cond:
                    self.cadence.after_success()
                    interval = self.cadence.after_list_tick(
                        finished=finished, in_flight=max(len(self._watched), backlog),
                        elapsed=now - last_list)
                    self._next_list = now + interval
                last_list = now
            else:
                with self._cond:
                    self.cadence.after_success()

    def _fetch(self, ids: list[str], listing: bool) -> dict[str, Job | Exception]:
        """The current description of each job (or its NotFoundError)."""
        found: dict[str, Job | Exception] = {}
        singles = ids
        if listing:
            self.requests["list"] += 1
            wanted = set(ids)
            # the list holds all of the user's jobs, finished ones too: build Job objects
            # only for the watched ones
            for item in self._list():
                if isinstance(item, dict) and item.get("id") in wanted:
                    found[item["id"]] = Job.from_json(item)
            singles = [i for i in ids if i not in found]
        for job_id in singles:
            self.requests["get"] += 1
            try:
                found[job_id] = self.client.job(job_id)
            except NotFoundError as exc:
                found[job_id] = exc
        return found

    def _list(self) -> list:
        response = self.client.request("GET", "/api/jobs")
        try:
            items = response.json()
        except ValueError as exc:
            raise ServerError(f"GET /api/jobs answered non-JSON: {response.text[:100]!r}") \
                from exc
        if not isinstance(items, list):
            raise ServerError("GET /api/jobs did not answer a list")
        return items

    def _deliver(self, jobs: dict[str, Job | Exception]) -> int:
        """Hand new states to their watchers, reschedule the rest; returns how many ended."""
        finished = 0
        now = time.monotonic()
        for job_id, job in jobs.items():
            with self._cond:
                watch = self._watched.get(job_id)
                if watch is None:
                    continue
                callback = self._observe(job_id, watch, job, now)
                if callback is not None and isinstance(job, Job) and job.is_done:
                    finished += 1
            if callback is None:
                continue
            try:
                if isinstance(job, Exception):
                    callback(job_id, job)
                else:
                    callback(job)
            except Exception:
                log.exception("callback for job %s failed", job_id)
        return finished

    def _observe(self, job_id: str, watch: _Watch, job: Job | Exception,
                 now: float) -> Callable | None:
        """With the lock held: update one watch; the callback to call, if any."""
        if isinstance(job, Exception):
            watch.misses += 1
            if watch.misses >= self.lost_after:
                del self._watched[job_id]
                return watch.on_lost
            watch.next_at = now + self.cadence.next_poll(watch.group, now - watch.since)
            return None
        watch.misses = 0
        if job.is_done:
            del self._watched[job_id]
            seen_pending = watch.last_pending_at or watch.since
            self.cadence.record_duration(watch.group, (seen_pending + now) / 2 - watch.since)
            return watch.on_update
        watch.last_pending_at = now
        watch.next_at = now + self.cadence.next_poll(watch.group, now - watch.since)
        if job.state == watch.last_state:
            return None
        watch.last_state = job.state
        return watch.on_update

    def _note_error(self, exc: EverestError, pause: float) -> None:
        self.requests["errors"] += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_warning > 30:
            self._last_warning = now
            log.warning("polling Everest failed (%s); retrying in %.2f s — jobs are not "
                        "affected", exc, pause)

    def _note_recovery(self) -> None:
        if self._failing_since is not None:
            log.info("polling Everest works again after %.1f s",
                     time.monotonic() - self._failing_since)
            self._failing_since = None
            self._last_warning = 0.0
