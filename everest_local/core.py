"""The server's state and its job operations, independent of HTTP.

:class:`Core` holds the store, tokens, catalog, files, executor, hooks and request
counters, and implements what the REST handlers do with jobs: submit (validate, check file
ownership, queue), render as Everest's job JSON, cancel, delete, and the text log.
Errors are ``everest_app.errors`` exceptions with the HTTP status the handler answers.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections import Counter
from datetime import datetime
from typing import Any

from everest_app import client_address, strict_json
from everest_app.descriptor import Application, validate_inputs
from everest_app.errors import (
    BadRequestError,
    EverestError,
    NotFoundError,
    TooManyRequestsError,
)
from everest_app.states import JobState
from everest_app.throttle import SignInThrottle
from everest_local.auth import DeviceCookies, SignInLinks, Tokens
from everest_local.catalog import Catalog
from everest_local.disk import DiskReserve
from everest_local.executor import Executor, TaskStop
from everest_local.files import FileStore, canonical_uri
from everest_local.hooks import Hooks
from everest_local.resources import Resources
from everest_local.settings import ServerSettings
from everest_local.staging import name_clash
from everest_local.store import JobRow, Store, new_id
from everest_local.task_users import TaskAccounts

MAX_BATCH = 1000
"""Jobs in one batch submission (``POST /api/jobs``)."""
MAX_WAITERS = 16
"""Waiting job listings one user may have open at once (more: 429)."""
ENDED_PAGE = 1000
"""Jobs in one answer of the jobs-ended listing (the cursor brings the rest)."""


def log_time(ts: float) -> str:
    """Everest's log timestamp: ``YYYY-MM-DD HH:MM:SS.fff`` (server local time)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


class Core:
    """Everything the handlers need; one per server process."""

    def __init__(self, settings: ServerSettings, catalog: Catalog,
                 resources: Resources | None = None):
        self.settings = settings
        self.catalog = catalog
        self.resources = resources or Resources()
        self.task_accounts = TaskAccounts(settings.task_user, settings.task_users,
                                          settings.allow_shared_task_user)
        self.store = Store(settings.data_dir)
        self.disk = DiskReserve(settings.data_dir, settings.disk_reserve)
        self.tokens = Tokens(self.store)
        self.sign_ins = SignInThrottle(settings.login_attempts, settings.login_backoff_max,
                                       settings.login_lock_addresses)
        self.devices = DeviceCookies(settings.data_dir)
        # proxies holding this key (the relay, a hub) may name a sign-in's client address
        self.client_address_key = client_address.create_key(
            settings.data_dir / client_address.KEY_FILE)
        self.sign_in_links = SignInLinks()
        self.files = FileStore(self.store, settings.data_dir / "files")
        self.hooks = Hooks()
        self.stats: Counter[str] = Counter()
        self.url = ""        # the listening address, set once bound
        self.task_url = ""   # what tasks get as EVEREST_URL
        self.executor = Executor(self)
        self.app_jobs: Counter[str] = Counter(self.store.app_job_counts())
        # job id -> (updated, JSON text): a job's rendering is reused until it changes
        self._rendered: dict[str, tuple[float, str]] = {}
        # waiting listings of ended jobs: woken (all, once per loop turn) when a job ends
        self._end_waiters: set[asyncio.Future[None]] = set()
        self._waiting: Counter[str] = Counter()
        self._wake_due = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the waiters' (set by the first)
        self.store.on_job_end = self._job_ended

    # -- jobs --------------------------------------------------------------------------------

    async def submit(self, user: str, app_ref: str, body: Any) -> dict[str, Any]:
        """Create a job of application ``app_ref`` from a submit body; return its JSON.

        Raises NotFoundError (unknown app), BadRequestError (bad body or inputs, a file the
        caller does not own), TooManyRequestsError (the user's jobs in flight).
        """
        job, app = await self._new_job(user, app_ref, body)
        self._check_in_flight(user, 1)
        self._create([(job, app)])
        return self.job_json(job)

    async def submit_many(self, user: str, items: Any) -> list[dict[str, Any]]:
        """Create the jobs of a batch (``[{"app": ref, "inputs": ..., "name": ...,
        "resources": ...}, ...]``) all together, or none of them; return their JSON in order.

        Every item is checked as :meth:`submit` checks one before any is created; the first
        bad item refuses the whole batch with 400 naming it (``jobs[3]: ...``), an unknown
        application included. The user's jobs in flight count the whole batch (429).
        """
        if not isinstance(items, list) or not items:
            raise BadRequestError("send {\"jobs\": [{\"app\": ..., \"inputs\": {...}}, ...]}"
                                  " with at least one job", status=400)
        if len(items) > MAX_BATCH:
            raise BadRequestError(f"at most {MAX_BATCH} jobs in one batch, not {len(items)}",
                                  status=400)
        made = []
        for i, item in enumerate(items):
            ref = item.get("app") if isinstance(item, dict) else None
            if not isinstance(ref, str) or not ref:
                raise BadRequestError(f"jobs[{i}]: each job is an object with 'app' (an "
                                      "application id or owner/alias)", status=400)
            try:
                made.append(await self._new_job(user, ref, item))
            except (BadRequestError, NotFoundError) as exc:
                raise BadRequestError(f"jobs[{i}]: {exc.message}", status=400) from None
        self._check_in_flight(user, len(made))
        self._create(made)
        return [self.job_json(job) for job, _ in made]

    def _check_in_flight(self, user: str, adding: int) -> None:
        limit = self.settings.max_jobs_in_flight
        if limit and self.store.jobs_in_flight(user) + adding > limit:
            raise TooManyRequestsError(
                f"you have {limit} jobs queued or running, this server's limit per user: "
                "submit more once some have ended", retry_after=30)

    def _create(self, made: list[tuple[JobRow, Application]]) -> None:
        """Store new jobs and their first log lines in one commit, then queue them."""
        with self.store.tx():
            for job, _ in made:
                self.store.insert_job(job)
                self.store.add_event(job.id, f"Job {job.id} submitted by {job.owner}: "
                                     f"application {self.catalog.owner_of[job.app_id]}/"
                                     f"{job.app_alias}", job.created)
        for job, app in made:
            self.app_jobs[job.app_id] += 1
            self.executor.enqueue(job.id, app, job)

    async def _new_job(self, user: str, app_ref: str,
                       body: Any) -> tuple[JobRow, Application]:
        """A new job (not stored yet) from a submit body, checked as :meth:`submit` says."""
        found = self.catalog.find(app_ref)
        if found is None:
            raise NotFoundError(f"no application {app_ref!r}", status=404)
        key, app = found
        if not isinstance(body, dict):
            raise BadRequestError("the body must be a JSON object with 'inputs'", status=400)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise BadRequestError("'name' must be a string", status=400)
        resources = body.get("resources")
        if resources is not None and not isinstance(resources, list):
            raise BadRequestError("'resources' must be a list of resource ids", status=400)
        resources = self.resources.check(user, app.alias, resources) or None
        inputs = body.get("inputs", {})
        prepare = self.hooks.input_preparers.get(app.alias)
        if prepare is not None:
            inputs = await _call_preparer(prepare, user, app, inputs)
        inputs = validate_inputs(app, inputs)
        self._check_files(user, app, inputs)
        clash = name_clash(app, inputs)
        if clash:
            raise BadRequestError(clash, status=400)
        now = time.time()
        job = JobRow(id=new_id(), owner=user, name=name or app.name, app_id=key,
                     app_alias=app.alias, app_name=app.name, state=JobState.READY,
                     # as stored (the JSON round trip), so the answer is what GET shows
                     inputs=json.loads(json.dumps(inputs)),
                     resources=resources, result=None, info=None, attempt=0, created=now,
                     updated=now)
        return job, app

    def check_storage(self, user: str, adding: int) -> None:
        """Refuse (429) storing ``adding`` more bytes for ``user`` past their limit."""
        limit = self.settings.max_stored_bytes
        if not limit:
            return
        used = self.store.stored_bytes(user)
        if used + adding > limit or used >= limit:
            raise TooManyRequestsError(
                f"your files would take {used + adding} bytes, over this server's limit of "
                f"{limit} bytes per user: delete some (DELETE /api/user/tmp_files, or jobs) "
                "and retry", retry_after=60)

    def _check_files(self, user: str, app: Application, inputs: dict[str, Any]) -> None:
        for name, uris in app.file_inputs(inputs):
            for uri in uris:
                if self.user_file(user, uri) is None:
                    raise BadRequestError(
                        f"input '{name}': no file {uri} of yours on this server (upload it to "
                        "/api/files/temp first; this server cannot fetch other URLs)",
                        status=400)

    def user_file(self, user: str, uri: str) -> dict[str, Any] | None:
        """The file row of ``uri`` if ``user`` may read it, else None."""
        canon = canonical_uri(uri, self.url)
        row = self.store.file(canon) if canon else None
        if row is None or row["owner"] != user:
            return None
        return row

    def user_job(self, user: str, job_id: str) -> JobRow:
        """The caller's job; NotFoundError for unknown ids and other users' jobs alike."""
        job = self.store.job(job_id) if len(job_id) <= 64 else None
        if job is None or job.owner != user:
            raise NotFoundError(f"no job {job_id}", status=404)
        return job

    def job_json(self, job: JobRow) -> dict[str, Any]:
        """Everest's job object. ``result`` is null until the job ends."""
        data: dict[str, Any] = {
            "id": job.id, "name": job.name, "state": job.state.value, "inputs": job.inputs,
            "appId": job.app_id, "appAlias": job.app_alias, "appName": job.app_name,
            "result": job.result if job.state.is_terminal else None, "info": job.info,
            "submitted": iso_time(job.created),
        }
        if job.resources is not None:
            data["resources"] = job.resources
        if data["result"] is None and job.state in (JobState.DONE, JobState.FAILED):
            data["result"] = {}
        decorate = self.hooks.job_decorators.get(job.app_alias or "")
        if decorate is not None:
            extra = decorate(dict(data))
            if extra:
                data.update(extra)
        return data

    def job_text(self, user: str, job_id: str) -> str:
        """The caller's job as JSON text (cached per job until it changes)."""
        stamp = self.store.job_stamp(job_id) if len(job_id) <= 64 else None
        if stamp is None or stamp[0] != user:
            raise NotFoundError(f"no job {job_id}", status=404)
        return self._text(job_id, stamp[1], stamp[2])

    def jobs_text(self, user: str) -> str:
        """All of the caller's jobs, newest first, as one JSON array."""
        stamps = self.store.job_stamps_of(user)
        misses = [job_id for job_id, updated, _ in stamps
                  if self._rendered.get(job_id, (None,))[0] != updated]
        # many changed jobs: one query for their rows beats one query per job (and reading
        # only those beats reading every job the user ever ran)
        rows = self.store.jobs_by_id(misses) if len(misses) > 20 else None
        parts = [self._text(job_id, updated, alias, rows)
                 for job_id, updated, alias in stamps]
        return "[" + ",".join(p for p in parts if p) + "]"

    def _text(self, job_id: str, updated: float, alias: str | None,
              rows: dict[str, JobRow] | None = None) -> str:
        decorated = (alias or "") in self.hooks.job_decorators
        hit = self._rendered.get(job_id)
        if hit is not None and hit[0] == updated and not decorated:
            return hit[1]
        job = rows.get(job_id) if rows is not None else None
        if job is None:  # not among the rows read (a decorated job), or deleted meanwhile
            job = self.store.job(job_id)
        if job is None:
            return ""
        text = strict_json.dumps(self.job_json(job), separators=(",", ":"))
        if not decorated:
            if len(self._rendered) > 200_000:
                self._rendered.clear()
            self._rendered[job_id] = (job.updated, text)
        return text

    # -- the jobs-ended listing (an extension: docs/api-extensions.md) ---------------------

    def ended_text(self, user: str, cursor: float) -> tuple[str, float]:
        """The caller's jobs that ended after ``cursor`` (a stamp this method returned),
        oldest end first, as one JSON array; and the cursor to ask with next."""
        rows = self.store.ended_stamps_since(user, cursor, ENDED_PAGE)
        if not rows:
            return "[]", cursor
        parts = [self._text(job_id, updated, alias) for job_id, updated, alias in rows]
        return "[" + ",".join(p for p in parts if p) + "]", rows[-1][1]

    def ended_cursor(self) -> float:
        """A cursor from which on every job that ends is listed."""
        return self.store.stamp()

    async def wait_ended(self, user: str, cursor: float, wait: float,
                         gone: asyncio.Future[None] | None = None) -> tuple[str, float]:
        """:meth:`ended_text`, waiting up to ``wait`` seconds (at most ``max_wait``) for
        one of the caller's jobs to end when none has since ``cursor``; ``gone`` ends the
        wait early (the client went away). 429 past :data:`MAX_WAITERS` waits per user."""
        text, after = self.ended_text(user, cursor)
        wait = min(wait, self.settings.max_wait)
        if text != "[]" or wait <= 0:
            return text, after
        if self._waiting[user] >= MAX_WAITERS:
            raise TooManyRequestsError(f"you have {MAX_WAITERS} waiting job listings open, "
                                       "this server's limit per user", retry_after=1)
        loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self._waiting[user] += 1
        try:
            while text == "[]" and (left := deadline - loop.time()) > 0 and \
                    not (gone is not None and gone.done()):
                woken: asyncio.Future[None] = loop.create_future()
                self._end_waiters.add(woken)
                try:
                    await asyncio.wait([woken] if gone is None else [woken, gone],
                                       timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._end_waiters.discard(woken)
                text, after = self.ended_text(user, cursor)
        finally:
            self._waiting[user] -= 1
            if not self._waiting[user]:
                del self._waiting[user]
        return text, after

    def _job_ended(self) -> None:
        """A job ended (its transaction not yet committed): wake the waiting listings once
        the loop has finished what it is doing, so a burst of ends is one wake-up."""
        if self._end_waiters and self._loop is not None and not self._wake_due:
            self._wake_due = True
            # from the loop's thread as a rule; from any thread, still safely
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_due = False
        waiters, self._end_waiters = self._end_waiters, set()
        for woken in waiters:
            if not woken.done():
                woken.set_result(None)

    def cancel(self, user: str, job_id: str) -> dict[str, Any]:
        """Cancel a job: queued ones at once, running ones once their process has ended."""
        job = self.user_job(user, job_id)
        if job.state.is_terminal:
            return self.job_json(job)
        if not self.executor.stop_job(job.id, TaskStop.CANCEL):
            with self.store.tx():
                self.store.update_job(job.id, state=JobState.CANCELLED,
                                      info="cancelled by the user")
                self.store.add_event(job.id, "Job CANCELLED: cancelled by the user")
            self.tokens.revoke_job(job.id)
        return self.job_json(self.store.job(job.id) or job)

    def delete(self, user: str, job_id: str) -> None:
        """Delete a job, its log and its files; a running task is stopped first."""
        job = self.user_job(user, job_id)
        if not job.state.is_terminal:
            self.executor.stop_job(job.id, TaskStop.DELETE)
        self.tokens.revoke_job(job.id)
        paths = self.store.delete_job_files(job.id)
        self.store.delete_job(job.id)
        self._rendered.pop(job.id, None)
        self.files.remove_paths(paths)

    def delete_named(self, user: str, name: str) -> int:
        ids = self.store.job_ids_named(user, name)
        for job_id in ids:
            self.delete(user, job_id)
        return len(ids)

    def log_text(self, user: str, job_id: str) -> str:
        job = self.user_job(user, job_id)
        return "".join(f"{log_time(ts)} {text}\n" for ts, text in self.store.events(job.id))


async def _call_preparer(prepare: Any, user: str, app: Application, inputs: Any) -> Any:
    try:
        out = prepare(user, app, inputs)
        if inspect.isawaitable(out):
            out = await out
    except BadRequestError:
        raise
    except EverestError as exc:
        raise EverestError(f"could not prepare the inputs of {app.alias}: {exc}",
                           status=502) from exc
    return out
