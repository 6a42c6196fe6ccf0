"""One background thread that watches every job of an orchestrator.

With few jobs in flight (see :meth:`Poller._many`) it asks for each job
(``GET /api/jobs/<id>``) on that job's own schedule; with more it asks once per tick for the
whole list (``GET /api/jobs``) and picks its jobs out of it, fetching singly only a job the
list lacks. :class:`~orchestrator.cadence.Cadence` sets the schedules. Requests go through
the client's keep-alive session.

Where the server offers it (:class:`~orchestrator.extensions.Extensions`, the local
server's ``GET /api/jobs?ended_after=<cursor>&wait=<s>``) the poller instead holds one
request open that the server answers as soon as one of the user's jobs ends, so an end is
learnt at once, in one request for all the jobs ended meanwhile. Jobs submitted after
:meth:`Poller.prepare` fetched the first cursor need nothing else; other watched jobs (a
journal's re-attached ones) are looked at once with plain requests, and every watched job
again every ``recheck`` seconds (a deleted job never ends: that is how it is noticed).

Failures never reach a watcher: an HTTP or connection error backs off and the tick is tried
again. The one exception is a job the server keeps answering 404 for (``lost_after`` times in
a row: it was deleted), which is reported through ``on_lost``. States the client does not
know (``UNKNOWN``) count as not finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from everest_app.client import EverestClient
from everest_app.errors import EverestError, NotFoundError, ServerError
from everest_app.job import Job
from everest_app.states import JobState
from orchestrator.cadence import Cadence
from orchestrator.extensions import Extensions

log = logging.getLogger(__name__)

OnUpdate = Callable[[Job], None]
OnLost = Callable[[str, Exception], None]

WAIT = 5.0
"""Seconds one waiting listing asks the server to hold (it may hold less)."""
RECHECK = 30.0
"""Seconds between plain looks at every watched job while waiting listings are used."""
_EARLY = 10_000  # ended jobs kept for a watch that has not begun yet


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
    checked: bool = True  # False: to be looked at plainly once (not known to end later)


class _NotOffered(ServerError):
    """The server answered a waiting listing as Everest answers a plain one."""


class Poller:
    """Watches jobs until they reach a terminal state. Thread-safe; start is lazy.

    ``backlog`` (optional) tells how many jobs the owner has on their way (being submitted
    or watched): while many are coming, the list interval may be longer even if few are
    watched at the moment, since each list answer will then carry many results.
    """

    def __init__(self, client: EverestClient, cadence: Cadence | None = None, *,
                 list_threshold: int = 3, lost_after: int = 5,
                 backlog: Callable[[], int] | None = None,
                 extensions: Extensions | Callable[[], Extensions] | None = None):
        self.client = client
        # what the server offers, or how to learn it (asked once, lazily); None: plain
        self._extensions = extensions if extensions is not None else Extensions()
        self._cursor: str | None = None
        self._prep_lock = threading.Lock()
        self._early: OrderedDict[str, Job] = OrderedDict()  # ended before being watched

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

    @property
    def extensions(self) -> Extensions:
        """What the server offers (asked on first use)."""
        if callable(self._extensions):
            with self._prep_lock:
                if callable(self._extensions):
                    self._extensions = self._extensions()
        return self._extensions

    def prepare(self) -> bool:
        """Call before submitting a job this poller is to watch: True when the job's end
        is then sure to be seen by waiting listings (pass ``fresh=True`` to
        :meth:`watch`); False when the server offers none (or could not be asked)."""
        if self._cursor is not None:
            return True
        if not self.extensions.max_wait:
            return False
        with self._prep_lock:
            if self._cursor is None:
                try:
                    self._cursor = self._ended("now", 0)[1]
                except _NotOffered:
                    self.drop_extension(wait=True)
                    return False
                except EverestError as exc:
                    log.debug("no cursor yet (%s): the job is looked at plainly once", exc)
                    return False
        return True

    def watch(self, job_id: str, on_update: OnUpdate, on_lost: OnLost, *,
              group: str = "", fresh: bool = False) -> None:
        """Call ``on_update(job)`` on each new state of the job, the last one terminal.

        ``group`` (the job's application) lets the schedule learn how long such jobs take.
        Callbacks run on the poller thread (or, for a job seen ending before its watch
        began, on the caller's) and must be quick. ``on_lost(job_id, error)`` is called
        instead if the job disappears from the server. ``fresh``: the job was submitted
        after :meth:`prepare` returned True.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("poller is closed")
            now = time.monotonic()
            watch = self._watched[job_id] = _Watch(on_update, on_lost, group, now,
                                                   now + self.cadence.first_poll(group),
                                                   checked=fresh)
            early = self._early.pop(job_id, None)
            callback = self._observe(job_id, watch, early, now) if early else None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="everest-poller",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if callback is not None:
            try:
                callback(early)
            except Exception:
                log.exception("callback for job %s failed", job_id)

    def unwatch(self, job_id: str) -> None:
        """Stop watching a job; no callback follows."""
        with self._cond:
            self._watched.pop(job_id, None)

    def close(self, timeout: float = 10) -> bool:
        """Stop the thread; watchers get no further callbacks. Returns whether the thread
        has ended (False: it is still finishing a request after ``timeout`` seconds)."""
        with self._cond:
            self._closed = True
            self._watched.clear()  # what the thread's request in flight brings is dropped
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # a waiting listing holds its request up to WAIT seconds
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
        if self.extensions.max_wait and self._run_waiting():
            return
        last_list = time.monotonic()
        while True:
            tick = self._next_tick()
            if tick is None:
                return
            ids, listing = tick
            try:
                jobs = self._fetch(ids, listing)
            except Exception as exc:  # Everest's, or a bug: neither may stop every future
                self._hold_after(exc)
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

    def drop_extension(self, *, batch: bool = False, wait: bool = False) -> None:
        """Stop using an extension the server no longer offers (it was replaced by one
        without: answers as Everest's then come back)."""
        ext = self.extensions
        self._extensions = Extensions(0 if batch else ext.batch_max,
                                      0.0 if wait else ext.max_wait, ext.cursor_header)

    def _run_waiting(self) -> bool:
        """The thread's loop where the server offers waiting listings: True when closed,
        False when the server stopped offering them (then poll)."""
        next_check = time.monotonic() + RECHECK
        while True:
            with self._cond:
                while not self._closed and (not self._watched or
                                            self._hold_until > time.monotonic()):
                    self._cond.wait(max(0.0, self._hold_until - time.monotonic())
                                    if self._watched else None)
                if self._closed:
                    return True
                now = time.monotonic()
                recheck = now >= next_check
                ids = [i for i, w in self._watched.items() if recheck or not w.checked]
            try:
                if ids:  # look plainly: jobs not known to end later, or every one (deleted?)
                    jobs = self._fetch(ids, listing=len(ids) > self.list_threshold)
                    with self._cond:
                        for job_id in ids:
                            if job_id in self._watched:
                                self._watched[job_id].checked = True
                    missing = any(isinstance(j, Exception) for j in jobs.values())
                    # a job answered 404 is asked about again soon (lost after a few)
                    next_check = time.monotonic() + (1.0 if missing else RECHECK)
                    self.cadence.after_success()
                else:
                    if self._cursor is None:
                        self._cursor = self._ended("now", 0)[1]
                        continue  # the jobs watched so far are looked at plainly
                    wait = min(WAIT, self.extensions.max_wait, max(0.0, next_check - now))
                    jobs, self._cursor = self._ended(self._cursor, wait)
                    self.cadence.after_success()
            except _NotOffered as exc:
                log.info("the server no longer offers waiting listings (%s): polling", exc)
                self.drop_extension(wait=True)
                with self._cond:  # every watched job: from now on on the plain schedule
                    now = time.monotonic()
                    for watch in self._watched.values():
                        watch.next_at = now
                return False
            except Exception as exc:  # Everest's, or a bug: neither may stop every future
                self._hold_after(exc)
                continue
            self._note_recovery()
            self._deliver(jobs)

    def _ended(self, cursor: str, wait: float) -> tuple[dict[str, Job | Exception], str]:
        """The jobs ended after ``cursor`` that are watched (the others are kept a while
        for a watch about to begin), and the next cursor; waits up to ``wait`` seconds."""
        self.requests["wait"] += 1
        response = self.client.request(
            "GET", "/api/jobs", params={"ended_after": cursor, "wait": f"{wait:.3f}"},
            timeout=(5, wait + 30))
        header = self.extensions.cursor_header
        try:
            items = response.json()
        except ValueError as exc:
            raise ServerError(f"GET /api/jobs?ended_after answered non-JSON: "
                              f"{response.text[:100]!r}") from exc
        after = response.headers.get(header)
        if not isinstance(items, list):
            raise ServerError("GET /api/jobs?ended_after did not answer a list")
        if not after:  # Everest's listing of all jobs: the parameters were ignored
            raise _NotOffered(f"GET /api/jobs?ended_after answered without {header}")
        found: dict[str, Job | Exception] = {}
        with self._cond:
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                    continue
                job = Job.from_json(item)
                if job.id in self._watched:
                    found[job.id] = job
                elif job.is_done:
                    self._early[job.id] = job
                    if len(self._early) > _EARLY:
                        self._early.popitem(last=False)
        return found, after

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

    def _hold_after(self, exc: Exception) -> None:
        """A tick failed: hold the next one back as the cadence says after an error. An
        Everest error is counted and reported; anything else is a bug, logged with its
        trace (call this in the ``except`` block)."""
        with self._cond:
            pause = self.cadence.after_error()
            self._hold_until = time.monotonic() + pause
        if isinstance(exc, EverestError):
            self._note_error(exc, pause)
        else:
            log.exception("poller tick failed")

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
