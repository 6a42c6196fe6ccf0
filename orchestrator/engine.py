"""The orchestrator: Everest jobs as futures, with DAG edges, a bound on jobs in flight,
retries, cancellation and a journal.

How a submission travels:

1. :meth:`Orchestrator.submit` prepares the inputs (files hashed, file objects read), works
   out the task's key (see :mod:`orchestrator.journal`) and returns a :class:`JobFuture`.
2. When every future among its inputs has succeeded, the task is *ready*; it waits in a
   queue while ``max_in_flight`` jobs are out.
3. A submit thread resolves the inputs (results of dependencies, URIs of uploads) and either
   re-attaches to the job the journal knows for this key or submits it. A submission that
   fails without a clear answer (connection lost, 5xx) may or may not have created the job:
   the thread then looks for a job with the task's unique name before sending it again, so a
   server restart neither loses nor duplicates a job.
   Where the server offers batch submission (:mod:`orchestrator.extensions`), the submit
   threads hand their jobs to one batch: whichever thread finds no batch on its way sends
   everything queued in one request, again until the queue is empty, so a burst of ready
   tasks is a few requests. A refused batch (one bad job: the server creates none) is sent
   again one job per request, so each bad job fails alone with its own message.
4. The poller watches the job; when it ends the future gets the job's ``result`` or a
   :class:`JobFailed` (after ``retries`` resubmissions with backoff for FAILED jobs).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from everest_app.client import EverestClient
from everest_app.errors import EverestConnectionError, EverestError, ServerError
from everest_app.job import Job
from everest_app.states import JobState
from orchestrator.actors import Actor, ActorRun
from orchestrator.cadence import Cadence
from orchestrator.errors import DependencyFailed, JobFailed, OrchestratorClosed
from orchestrator.executor import AppExecutor
from orchestrator.extensions import Extensions
from orchestrator.futures import JobFuture
from orchestrator.inputs import (
    dependencies,
    fingerprint,
    may_be_local_path,
    paths_for_file_inputs,
    prepare,
    resolve,
)
from orchestrator.journal import Journal
from orchestrator.poller import Poller
from orchestrator.progress import progress_bar
from orchestrator.uploads import Uploads

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 100
LOG_TAIL_LINES = 20


@dataclass(eq=False)
class _Task:
    """One submission request and where it is on its way."""

    future: JobFuture
    app: str
    inputs: dict[str, Any]
    name: str | None
    resources: list[str] | None
    retries: int
    waiting: int
    attempt: int = 0
    job_id: str | None = None
    holds_slot: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> str:
        """The journal key of the current attempt."""
        base = self.future.key
        return base if self.attempt == 0 else f"{base}.{self.attempt}"

    @property
    def job_name(self) -> str:
        """The job's name on the server: readable, and unique per attempt (lookups use it)."""
        return f"{self.future.label} #{self.key}"


class Orchestrator:
    """Submits Everest jobs as futures and watches them with one background poller.

    ``client`` is an :class:`EverestClient`. ``journal`` (a path) records submissions so a
    restarted process re-attaches instead of submitting again. ``max_in_flight`` bounds the
    jobs submitted and not yet ended. ``submit_timeout`` is how long a submission keeps being
    retried while the server is unreachable. The poller's cadence is tuned by
    ``poll_min_interval``, ``poll_max_interval`` and ``list_threshold`` (the number of jobs
    in flight above which one list request replaces per-job requests). ``extensions``
    (default True) uses the server's batch submission and waiting listings where it offers
    them (docs/api-extensions.md); False keeps to Everest's own API.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, client: EverestClient, *, journal: str | Path | Journal | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, submit_threads: int = 4,
                 poll_min_interval: float = 0.01, poll_max_interval: float = 2.0,
                 list_threshold: int = 3, progress: bool = True,
                 submit_timeout: float = 300.0, retry_backoff: float = 1.0,
                 own_client: bool = False, extensions: bool = True):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.client = client
        self.journal = journal if isinstance(journal, Journal) or journal is None \
            else Journal(journal)
        self.run_id = self.journal.run_id if self.journal is not None else secrets.token_hex(8)
        self.max_in_flight = max_in_flight
        self.progress = progress
        self.submit_timeout = submit_timeout
        self.retry_backoff = retry_backoff
        self.poller = Poller(client, Cadence(poll_min_interval, poll_max_interval),
                             list_threshold=list_threshold,
                             backlog=lambda: self._in_flight + len(self._ready),
                             extensions=partial(Extensions.of, client) if extensions
                             else None)
        self._batch: list[tuple[_Task, dict[str, Any]]] = []  # waiting to be sent
        self._batch_lock = threading.Lock()
        self._sending = False
        self.uploads = Uploads(client)
        self._own_client = own_client
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=submit_threads, thread_name_prefix="everest-submit")
        self._lock = threading.Lock()
        self._app_inputs: dict[str, dict[str, Any]] = {}  # app -> its inputs description
        self._ready: deque[_Task] = deque()
        self._in_flight = 0
        self._occurrences: Counter[str] = Counter()
        self._tasks: set[_Task] = set()
        self._closed = False
        self._counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<Orchestrator {self.client.url} in flight={self._in_flight}>"

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        # a clean exit waits for the work; an exception (Ctrl-C included) cancels it
        self.close(wait=exc_type is None, cancel_jobs=exc_type is not None)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: jobs submitted, reattached, done, failed, retried, cancelled;
        ``batches`` sent (and ``batch_fallbacks``, sent again one job per request); requests
        the poller made (``get``, ``list``, ``wait``, ``errors``); ``uploads``."""
        with self._lock:
            counts = dict(self._counts)
        counts.update({f"poll_{k}": v for k, v in self.poller.requests.items()})
        counts["uploads"] = self.uploads.count
        return counts

    @property
    def in_flight(self) -> int:
        """Jobs being submitted or running now."""
        return self._in_flight

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    # -- submitting ------------------------------------------------------------------------

    def submit(self, app: str, inputs: dict[str, Any] | None = None, *,
               name: str | None = None, resources: list[str] | None = None,
               retries: int = 0, after: Iterable[JobFuture] = ()) -> JobFuture:
        """Submit one job of ``app`` and return its future.

        An input value may be a future (its only output) or ``future.output(name)``: the
        job waits for it and gets its value; ``after`` lists futures to wait for without
        using their values. A ``pathlib.Path`` or an open file is uploaded (once per
        content). ``retries`` resubmits a FAILED job that many times, with backoff.

        Raises ``RuntimeError`` when closed, ``FileNotFoundError`` for a missing input file
        and ``TypeError`` for an ``after`` item that is not a job future.
        """
        if self._closed:
            raise RuntimeError("orchestrator is closed")
        inputs = dict(inputs or {})
        if any(map(may_be_local_path, inputs.values())):
            inputs = paths_for_file_inputs(inputs, self._input_specs(app))
        prepared = prepare(inputs)
        after = list(after)
        for dep in after:
            if not isinstance(dep, JobFuture):
                raise TypeError(f"after= takes job futures, not {type(dep).__name__}")
        deps = dependencies(prepared)
        deps += [d for d in dict.fromkeys(after) if all(d is not x for x in deps)]
        key = self._key(app, prepared, name, resources, after)
        label = name or app.strip("/").rsplit("/", 1)[-1]
        future = JobFuture(app, key, label)
        task = _Task(future, app, prepared, name, list(resources) if resources else None,
                     max(0, int(retries)), waiting=len(deps))
        future._on_cancel = partial(self._on_future_cancelled, task)
        with self._lock:
            self._tasks.add(task)
        future.add_done_callback(partial(self._forget, task))
        if not deps:
            self._make_ready(task)
        for dep in deps:
            dep.add_done_callback(partial(self._dependency_done, task))
        return future

    def _input_specs(self, app: str) -> dict[str, Any]:
        """The application's ``inputs`` description, asked once per application; ``{}``
        when it cannot be had (the server then judges the inputs as given)."""
        with self._lock:
            if app in self._app_inputs:
                return self._app_inputs[app]
        try:
            specs = self.client.app(app).get("inputs") or {}
        except EverestError as exc:
            log.debug("no description of %s (%s): string inputs are sent as given", app, exc)
            specs = {}
        with self._lock:
            self._app_inputs[app] = specs
        return specs

    def _key(self, app: str, inputs: dict[str, Any], name: str | None,
             resources: list[str] | None, after: list[JobFuture]) -> str:
        """A key that is the same for the same task at the same place in the same program."""
        body = json.dumps({"app": app, "inputs": fingerprint(inputs), "name": name,
                           "resources": resources, "after": [f.key for f in after]},
                          sort_keys=True, default=str)
        base = hashlib.sha256(body.encode()).hexdigest()
        with self._lock:
            occurrence = self._occurrences[base]
            self._occurrences[base] += 1
        return hashlib.sha256(f"{self.run_id}:{base}:{occurrence}".encode()).hexdigest()[:20]

    def _dependency_done(self, task: _Task, dep: concurrent.futures.Future) -> None:
        if task.future.done():
            return
        cause: BaseException | None = None
        if dep.cancelled():
            cause = concurrent.futures.CancelledError("cancelled")
        elif dep.exception() is not None:
            cause = dep.exception()
        if cause is not None:
            self._fail(task, DependencyFailed(dep, cause))
            return
        with task.lock:
            task.waiting -= 1
            ready = task.waiting == 0
        if ready:
            self._make_ready(task)

    def _make_ready(self, task: _Task) -> None:
        with self._lock:
            if task.future.done() or self._closed:
                return
            if self._in_flight >= self.max_in_flight:
                self._ready.append(task)
                return
            self._in_flight += 1
            task.holds_slot = True
        self._start(task)

    def _start(self, task: _Task) -> None:
        try:
            self._pool.submit(self._launch, task)
        except RuntimeError:  # the pool is shut down: we are closing
            self._release(task)

    def _release(self, task: _Task) -> None:
        """Give back the task's in-flight slot and start what the queue holds."""
        starts = []
        with self._lock:
            if not task.holds_slot:
                return
            task.holds_slot = False
            self._in_flight -= 1
            while self._ready and self._in_flight < self.max_in_flight and not self._closed:
                nxt = self._ready.popleft()
                if nxt.future.done():
                    continue
                self._in_flight += 1
                nxt.holds_slot = True
                starts.append(nxt)
        for nxt in starts:
            self._start(nxt)

    def _launch(self, task: _Task) -> None:
        """On a submit thread: resolve inputs, re-attach or submit, then watch the job."""
        future = task.future
        if future.done():
            self._release(task)
            return
        fresh = False
        try:
            job_id = self.journal.job_for(task.key) if self.journal is not None else None
            if job_id is not None:  # re-attach: no upload, no submission
                self._count("reattached")
            else:
                inputs = resolve(task.inputs, self.uploads.uri_for)
                fresh = self.poller.prepare()  # before the job exists: its end is seen
                if self.poller.extensions.batch_max and (
                        self.journal is None or self.journal.intended(task.key) is None):
                    self._send_in_batch(task, inputs, fresh)
                    return
                job_id, fresh = self._attach_or_submit(task, inputs, fresh=fresh)
        except Exception as exc:
            self._release(task)
            self._fail(task, exc)
            return
        self._watch(task, job_id, fresh)

    def _watch(self, task: _Task, job_id: str, fresh: bool) -> None:
        """The task's job exists: note it and let the poller watch it."""
        future = task.future
        task.job_id = future.job_id = job_id
        future.attempts = task.attempt + 1
        if future.cancelled():  # cancelled while the submission was on its way
            self._cancel_job(job_id)
        try:
            self.poller.watch(job_id, partial(self._on_update, task),
                              partial(self._on_lost, task), group=task.app, fresh=fresh)
        except RuntimeError:  # closing
            self._release(task)

    def _send_in_batch(self, task: _Task, inputs: dict[str, Any], fresh: bool) -> None:
        """Queue the task's submission; the thread that finds no batch on its way sends
        what is queued, as one request per batch, until the queue is empty."""
        with self._batch_lock:
            self._batch.append((task, inputs))
            if self._sending:
                return
            self._sending = True
        limit = self.poller.extensions.batch_max
        while True:
            with self._batch_lock:
                batch, self._batch = self._batch[:limit], self._batch[limit:]
                if not batch:
                    self._sending = False
                    return
            try:
                self._submit_batch(batch, fresh)
            except Exception as exc:  # a bug: fail these tasks, never stall the queue
                log.exception("submitting a batch failed")
                for queued, _ in batch:
                    self._release(queued)
                    self._fail(queued, exc)

    def _submit_batch(self, batch: list[tuple[_Task, dict[str, Any]]], fresh: bool) -> None:
        """Submit ``batch`` in one request (one per job if the server refuses it)."""
        journal = self.journal
        items = []
        for task, inputs in batch:
            item: dict[str, Any] = {"app": task.app, "name": task.job_name, "inputs": inputs}
            if task.resources:
                item["resources"] = list(task.resources)
            items.append(item)
            if journal is not None:
                journal.record_intent(task.key, task.job_name)
        try:
            answer = self.client.request("POST", "/api/jobs", json={"jobs": items}).json()
            ids = [job["id"] for job in answer]
            if len(ids) != len(batch) or not all(isinstance(i, str) for i in ids):
                raise ServerError(f"POST /api/jobs answered {len(ids)} jobs for {len(batch)}")
        except Exception as exc:
            # refused (a bad job: none was created) or no clear answer (the jobs may exist:
            # the names are looked for first): one request per job from here on
            sent = isinstance(exc, EverestConnectionError | ServerError | ValueError |
                              KeyError | TypeError)
            log.debug("batch of %d not submitted as one (%s): one by one", len(batch), exc)
            self._count("batch_fallbacks")
            if isinstance(exc, EverestError) and exc.status in (404, 405):
                self.poller.drop_extension(batch=True)  # a server without it now
            made = self._jobs_by_name() if sent else {}  # one listing, not one per job
            for task, inputs in batch:
                try:
                    if made and task.job_name in made:
                        self._count("adopted")
                        if journal is not None:
                            journal.record_job(task.key, made[task.job_name])
                        self._watch(task, made[task.job_name], False)
                        continue
                    job_id, was_fresh = self._attach_or_submit(
                        task, inputs, fresh=fresh, maybe_sent=sent and made is None)
                except Exception as one:
                    self._release(task)
                    self._fail(task, one)
                    continue
                self._watch(task, job_id, was_fresh)
            return
        self._count("submitted", len(batch))
        self._count("batches")
        for (task, _), job_id in zip(batch, ids, strict=True):
            if journal is not None:
                journal.record_job(task.key, job_id)
            self._watch(task, job_id, fresh)

    def _attach_or_submit(self, task: _Task, inputs: dict[str, Any], *, fresh: bool = False,
                          maybe_sent: bool = False) -> tuple[str, bool]:
        """The id of the task's job: found on the server by its unique name (when a
        submission may have been sent already), or new; and whether it is ``fresh`` (made
        by this call, after the poller's :meth:`~Poller.prepare`)."""
        key, name = task.key, task.job_name
        journal = self.journal
        maybe_sent = maybe_sent or (journal is not None and journal.intended(key) is not None)
        deadline = time.monotonic() + self.submit_timeout
        delay = 0.2
        while True:
            try:
                if maybe_sent and (job := self._find_by_name(name)) is not None:
                    self._count("adopted")
                    log.info("found job %s (%s) already on the server; not resubmitting",
                             job.id, name)
                    if journal is not None:
                        journal.record_job(key, job.id)
                    return job.id, False
                if journal is not None:
                    journal.record_intent(key, name)
                maybe_sent = True
                job = self.client.submit(task.app, inputs, name=name,
                                         resources=task.resources)
                self._count("submitted")
                if journal is not None:
                    journal.record_job(key, job.id)
                return job.id, fresh
            except (EverestConnectionError, ServerError) as exc:
                if self._closed or time.monotonic() + delay > deadline:
                    raise
                self._count("submit_errors")
                log.warning("submitting %s: %s; retrying in %.1f s", name, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _jobs_by_name(self) -> dict[str, str] | None:
        """The user's job ids by name; None when the server cannot be asked now."""
        try:
            return {job.name: job.id for job in self.client.jobs()}
        except EverestError:
            return None

    def _find_by_name(self, name: str) -> Job | None:
        matches = [job for job in self.client.jobs() if job.name == name]
        return matches[0] if matches else None

    # -- watching --------------------------------------------------------------------------

    def _on_update(self, task: _Task, job: Job) -> None:
        """On the poller thread: a new state of the task's job."""
        future = task.future
        future.job = job
        if not job.is_done:
            return
        self._release(task)
        if future.done():
            return
        if job.state == JobState.DONE:
            self._count("done")
            self._set_result(future, job.result or {})
        elif job.state == JobState.FAILED and task.attempt < task.retries and not self._closed:
            task.attempt += 1
            self._count("retried")
            delay = self.retry_backoff * 2 ** (task.attempt - 1)
            log.info("job %s failed (%s); attempt %d of %d in %.1f s", job.id, job.info,
                     task.attempt + 1, task.retries + 1, delay)
            timer = threading.Timer(delay, self._make_ready, (task,))
            timer.daemon = True
            timer.start()
        else:
            try:
                self._pool.submit(self._fail_with_log, task, job)
            except RuntimeError:
                self._fail(task, JobFailed(job, attempts=task.attempt + 1))

    def _on_lost(self, task: _Task, job_id: str, error: Exception) -> None:
        self._release(task)
        gone = Job(id=job_id, name=task.job_name, state=JobState.UNKNOWN,
                   info=f"the job no longer exists on the server ({error})")
        self._fail(task, JobFailed(gone, attempts=task.attempt + 1))

    def _fail_with_log(self, task: _Task, job: Job) -> None:
        try:
            tail = "\n".join(self.client.log(job.id).splitlines()[-LOG_TAIL_LINES:])
        except EverestError as exc:
            tail = f"(the log could not be read: {exc})"
        self._count("failed")
        self._fail(task, JobFailed(job, tail, attempts=task.attempt + 1))

    @staticmethod
    def _set_result(future: JobFuture, value: Any) -> None:
        try:
            future.set_result(value)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            pass

    @staticmethod
    def _fail(task: _Task, exc: BaseException) -> None:
        try:
            task.future.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass

    def _forget(self, task: _Task, _future: object = None) -> None:
        with self._lock:
            self._tasks.discard(task)

    # -- cancelling ------------------------------------------------------------------------

    def _on_future_cancelled(self, task: _Task, _future: JobFuture) -> None:
        self._count("cancelled")
        if task.job_id is not None:
            self._cancel_job(task.job_id)

    def _cancel_job(self, job_id: str) -> None:
        try:
            self.client.cancel(job_id)
        except EverestError as exc:
            log.warning("cancelling job %s failed: %s", job_id, exc)

    # -- many at once ------------------------------------------------------------------------

    def map(self, app: str, inputs_iterable: Iterable[dict[str, Any]], *,
            max_in_flight: int | None = None, progress: bool | None = None,
            name: str | None = None, resources: list[str] | None = None, retries: int = 0,
            return_exceptions: bool = False) -> list[Any]:
        """Run ``app`` once per inputs dict; the results in the inputs' order.

        At most ``max_in_flight`` of these jobs are submitted and unfinished at a time (the
        orchestrator's own bound applies too); inputs are read lazily. When a job fails, the
        rest are cancelled and its exception raised, unless ``return_exceptions`` puts
        exceptions in the list. Ctrl-C (or any exception) cancels the jobs not yet ended.
        """
        window = max_in_flight or self.max_in_flight
        total = len(inputs_iterable) if hasattr(inputs_iterable, "__len__") else None
        bar = progress_bar(self.progress if progress is None else progress, total=total,
                           desc=name or app.rsplit("/", 1)[-1])
        futures: list[JobFuture] = []
        pending: set[JobFuture] = set()
        try:
            for inputs in inputs_iterable:
                while len(pending) >= window:
                    self._drain(pending, bar, return_exceptions)
                future = self.submit(app, inputs, name=name, resources=resources,
                                     retries=retries)
                futures.append(future)
                pending.add(future)
            while pending:
                self._drain(pending, bar, return_exceptions)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()
        if return_exceptions:
            return [_outcome(f) for f in futures]
        return [f.result() for f in futures]

    @staticmethod
    def _drain(pending: set[JobFuture], bar: Any, return_exceptions: bool) -> None:
        done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            pending.discard(future)
            bar.update(1)
            if not return_exceptions:
                if future.cancelled():
                    raise concurrent.futures.CancelledError(f"{future!r} was cancelled")
                if future.exception() is not None:
                    raise future.exception()

    def executor(self, app: str, *, name: str | None = None,
                 resources: list[str] | None = None, retries: int = 0) -> AppExecutor:
        """A :class:`concurrent.futures.Executor` whose ``submit(inputs)`` runs ``app``."""
        return AppExecutor(self, app, name=name, resources=resources, retries=retries)

    def run(self, actors: Iterable[Actor], *, progress: bool | None = None) -> None:
        """Run Templet-style actors until none has work (see :mod:`orchestrator.actors`)."""
        ActorRun(self, list(actors), self.progress if progress is None else progress).run()

    # -- files -------------------------------------------------------------------------------

    def download(self, uri: str, path: str | Path) -> Path:
        """Save the file at ``uri`` (a job's output) to ``path``; returns the path."""
        return self.client.download(uri, path)

    def read(self, uri: str) -> bytes:
        """The content of the file at ``uri``."""
        return self.client.read(uri)

    # -- closing -----------------------------------------------------------------------------

    def close(self, *, wait: bool = False, cancel_jobs: bool = False) -> None:
        """Stop the poller and submit threads. Idempotent.

        With ``wait`` it first waits for every future. Futures still pending then are
        cancelled with their jobs when ``cancel_jobs``; otherwise they fail with
        :class:`OrchestratorClosed` and their jobs keep running (a journal re-attaches).
        """
        if wait and not self._closed:
            with self._lock:
                futures = [t.future for t in self._tasks]
            concurrent.futures.wait(futures)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            tasks = list(self._tasks)
            self._ready.clear()
        for task in tasks:
            if cancel_jobs:
                task.future.cancel()
            else:
                self._fail(task, OrchestratorClosed(
                    f"orchestrator closed before {task.future.label} ended"
                    + (f"; job {task.job_id} keeps running" if task.job_id else "")))
        # no callback comes after this; a waiting listing in flight ends on its own
        self.poller.close(timeout=1.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.journal is not None:
            self.journal.close()
        if self._own_client:
            self.client.close()


def _outcome(future: JobFuture) -> Any:
    if future.cancelled():
        return concurrent.futures.CancelledError(f"{future!r} was cancelled")
    return future.exception() or future.result()
