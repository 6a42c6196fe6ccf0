"""Running jobs as processes on this machine: queues, slots, cancel, time limits, recovery.

A job here has one task; a retry is a new attempt with task id ``<jobId>-0-<attempt>``
(task numbers and attempts both count from 0 — Everest's numbering is not public).
Life cycle: READY (queued) -> SCHEDULED (work dir being staged; on Slurm, also while the
batch job is pending) -> RUNNING -> DONE, FAILED or CANCELLED.

A job runs on one resource (see :mod:`everest_local.resources`), chosen when it is queued.
Each resource has its own queues: on this machine at most ``slots`` batch tasks run at
once, elsewhere the resource's ``slots``; services (see ``ServerSettings``) use their own
pool. Tasks on this machine are processes watched here; other kinds go through a backend
(:mod:`everest_local.backends`), whose handle is stored before the task starts.

Cancel sends SIGINT to the task's process group, SIGTERM after ``kill_grace`` seconds and
SIGKILL after twice that; the job turns CANCELLED when the process has ended, as on
Everest. A time limit stops the task the same way and fails the job.

Everything a restart needs is in the database and the task folder (pid, process start
time, the wrapper's exit file): see :meth:`Executor.recover`.

Threading: all state and all database access live on the event loop thread; staging,
spawning and output collection run in a small thread pool and report back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import json
import logging
import os
import shutil
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from everest_app.descriptor import Application
from everest_app.states import ACTIVE_STATES, JobState, TaskState
from everest_local import processes
from everest_local.auth import Tokens
from everest_local.backends import Backend, TaskSpec, make_backend, write_argv
from everest_local.catalog import Catalog
from everest_local.files import FileStore, canonical_uri
from everest_local.resources import LOCAL, Resource, Resources
from everest_local.settings import ServerSettings
from everest_local.staging import (
    StagingError,
    build_argv,
    collect_outputs,
    resolve_executable,
    stage_inputs,
)
from everest_local.store import JobRow, Store, TaskRow
from everest_local.task_users import TaskAccounts, TaskUser, tasks_root

log = logging.getLogger(__name__)


class Host(Protocol):
    """What the executor needs of the server it runs in (:class:`everest_local.core.Core`):
    named here so this module does not import the one that imports it."""

    settings: ServerSettings
    store: Store
    catalog: Catalog
    files: FileStore
    tokens: Tokens
    resources: Resources
    task_accounts: TaskAccounts
    url: str
    task_url: str

Slot = tuple[str, bool]  # (resource id, service?): one queue and one slot count each
TASK_TOKEN_LIFETIME = 365 * 24 * 3600  # revoked when the job ends anyway
_ENV_DROP = ("EVEREST_TOKEN", "EVEREST_TASK_TOKEN", "EVEREST_PROFILE")



class TaskStop(str, enum.Enum):
    """Why the executor stops a running task (stored with the task, so a restart resumes it)."""

    CANCEL = "cancel"
    DELETE = "delete"
    SHUTDOWN = "shutdown"
    TIMEOUT = "timeout"


STOP_INFO = {
    TaskStop.CANCEL: "cancelled by the user",
    TaskStop.DELETE: "deleted by the user",
    TaskStop.SHUTDOWN: "cancelled: the local server was stopped while the task ran",
}
_STOP_EVENT = {TaskStop.TIMEOUT: "time limit reached", TaskStop.CANCEL: "cancel requested",
               TaskStop.SHUTDOWN: "server stopping", TaskStop.DELETE: "job deleted"}


@dataclass
class Running:
    """A task whose process the executor watches (spawned here or re-adopted)."""

    task_id: str
    job_id: str
    app_key: str
    slot: Slot
    dir: Path
    pid: int
    pstart: int | None
    popen: Any = None
    deadline: float | None = None
    stop_reason: TaskStop | None = None
    stop_at: float | None = None
    signals_sent: int = 0
    finishing: bool = False
    backend: Backend | None = None  # None: a process on this machine
    handle: dict[str, Any] | None = None
    reported: tuple[JobState, str | None] | None = None
    lost: str | None = None  # why a remote task ended without an exit status

    @property
    def work(self) -> Path:
        return self.dir / "work"


class Executor:
    """Queues jobs, starts their tasks in slots, watches them, records how they end."""

    def __init__(self, core: Host):
        self.core = core
        self.settings = core.settings
        self.tasks_root = tasks_root(core.settings.data_dir, core.task_accounts)
        self.resources = core.resources
        self.local_id = self.resources.by_name[LOCAL].id
        self.queues: dict[Slot, deque[str]] = {}
        self.busy: Counter[Slot] = Counter()
        self.backends: dict[str, Backend] = {}
        self.running: dict[str, Running] = {}
        self.starting: dict[str, TaskStop | None] = {}  # job id -> stop asked while staging
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="task-io")
        self._bg: set[asyncio.Task] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._sigchld = False
        self._trash: list[Path] = []  # finished task dirs, removed in batches off the loop

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin watching processes (SIGCHLD where possible, plus a periodic sweep)."""
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGCHLD, self._reap)
            self._sigchld = True
        except (RuntimeError, ValueError, NotImplementedError):
            self._sigchld = False  # not the main thread: the sweep polls more often
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.25 if self._sigchld else 0.05
        self._tick_handle = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        try:
            self._reap()
            self._sweep(time.time())
            if self._trash:
                batch, self._trash = self._trash, []
                self.pool.submit(_remove_dirs, batch)
        except Exception:  # never let one bad task stop the watch of the others
            log.exception("task sweep failed")
        self._schedule_tick()

    async def shutdown(self) -> None:
        """Stop every running task (SIGINT, then TERM/KILL), record them, stop watching."""
        for queue in self.queues.values():
            queue.clear()
        for run in list(self.running.values()):
            self._begin_stop(run, TaskStop.SHUTDOWN)
        limit = time.time() + 2 * self.settings.kill_grace + 5
        while (self.running or self.starting or self._bg) and time.time() < limit:
            await asyncio.sleep(0.05)
        if self._tick_handle:
            self._tick_handle.cancel()
        _remove_dirs(self._trash)
        if self._sigchld:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception:
                log.exception("closing the backend of %s failed", backend.resource.name)
        self.pool.shutdown(wait=True)

    def _spawn_bg(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)

    def _bg_done(self, task: asyncio.Task) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception():
            log.error("background task failed", exc_info=task.exception())

    # -- queueing --------------------------------------------------------------------------

    def enqueue(self, job_id: str, app: Application, job: JobRow | None = None) -> None:
        """Queue a READY job on the resource it runs on; start it if a slot is free."""
        job = job or self.core.store.job(job_id)
        if job is None:
            return
        resource = self.resources.choose(job.owner, app.alias, job.resources, self._load)
        self.queues.setdefault((resource.id, app.is_service), deque()).append(job_id)
        self._pump()

    def _load(self, resource: Resource) -> int:
        """Tasks queued and running on ``resource`` (to pick a pool's least busy member)."""
        queued = sum(len(q) for key, q in self.queues.items() if key[0] == resource.id)
        return queued + sum(n for key, n in self.busy.items() if key[0] == resource.id)

    def _limit(self, slot: Slot) -> int:
        rid, service = slot
        if service:
            return self.settings.service_slots
        resource = self.resources.get(rid)
        if resource is None or resource.kind == "local":
            return self.settings.slots
        return resource.slots

    def _pump(self) -> None:
        for slot, queue in self.queues.items():
            limit = self._limit(slot)
            while queue and self.busy[slot] < limit:
                job_id = queue.popleft()
                self.busy[slot] += 1
                self._spawn_bg(self._start_guarded(job_id, slot))

    def _release(self, slot: Slot) -> None:
        self.busy[slot] -= 1
        self._pump()

    def _backend(self, resource: Resource) -> Backend:
        backend = self.backends.get(resource.id)
        if backend is None:
            backend = self.backends[resource.id] = make_backend(resource)
        return backend

    # -- starting a task -------------------------------------------------------------------

    async def _start_guarded(self, job_id: str, slot: Slot) -> None:
        """Start a job's task; an unexpected error fails the job instead of losing a slot."""
        try:
            resource = self.resources.get(slot[0])
            if resource is None or resource.kind == "local":
                await self._start(job_id, slot)
            else:
                await self._start_remote(job_id, slot)
        except Exception as exc:
            log.exception("starting job %s failed", job_id)
            self.starting.pop(job_id, None)
            self._fail_internal(job_id, exc)
            self._release(slot)

    def _fail_internal(self, job_id: str, exc: Exception) -> None:
        try:
            if self.core.store.job(job_id) is not None:
                self._end_without_task(job_id, JobState.FAILED, f"internal error of the local "
                                       f"server: {type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not record the failure of job %s", job_id)

    def _startable(self, job_id: str, slot: Slot) -> tuple[JobRow, Application] | None:
        """The READY job and its app, or None (slot released, job failed if app is gone)."""
        job = self.core.store.job(job_id)
        found = self.core.catalog.apps.get(job.app_id) if job else None
        if job is None or job.state is not JobState.READY:
            self._release(slot)
            return None
        if found is None:
            self._end_without_task(job_id, JobState.FAILED, f"application {job.app_alias} is no "
                                   "longer offered by this server")
            self._release(slot)
            return None
        return job, found

    def _new_task(self, job: JobRow, app: Application, slot: Slot
                  ) -> tuple[str, Path, dict[str, Path], dict[str, str]]:
        """Record a STAGING task of ``job`` on the slot's resource, its job SCHEDULED; return
        the task's id, folder, input files and environment (with its fresh token)."""
        core = self.core
        task_id = f"{job.id}-0-{job.attempt}"
        task_dir = self.tasks_root / task_id
        files = self._input_files(app, job.inputs)
        with core.store.tx():
            token = core.tokens.issue(job.owner, f"task {task_id}", TASK_TOKEN_LIFETIME, job.id)
            core.store.insert_task(TaskRow(task_id, job.id, TaskState.STAGING, str(task_dir),
                                           None, None, None, None, None, None, None,
                                           resource=slot[0]))
            core.store.update_job(job.id, state=JobState.SCHEDULED)
        self.starting[job.id] = None
        return task_id, task_dir, files, self._task_env(token, job.id, task_id)

    async def _start(self, job_id: str, slot: Slot) -> None:
        core = self.core
        startable = self._startable(job_id, slot)
        if startable is None:
            return
        job, app = startable
        task_id, task_dir, files, env = self._new_task(job, app, slot)
        user = self.core.task_accounts.for_owner(job.owner)
        if user is not None:
            env = user.env(env, task_dir / "work")
        try:
            if files:  # copying input files may take a while: off the loop
                spawned = await asyncio.get_running_loop().run_in_executor(
                    self.pool, _prepare_and_spawn, app, job.inputs, task_dir, files, env,
                    user)
            else:  # small work (app files, scalar inputs): a thread hop would cost more
                spawned = _prepare_and_spawn(app, job.inputs, task_dir, files, env, user)
        except (StagingError, OSError) as exc:
            stop = self.starting.pop(job_id, None)
            await self._record_end(task_id, job_id, app, task_dir, None, stop,
                                   start_error=str(exc))
            self._release(slot)
            return
        stop = self.starting.pop(job_id, None)
        now = time.time()
        limit = app.time_limit
        run = Running(task_id, job_id, job.app_id, slot, task_dir, spawned.pid,
                      spawned.start_time, spawned.popen,
                      deadline=now + limit if limit else None)
        self.running[task_id] = run
        with core.store.tx():
            core.store.update_task(task_id, state=TaskState.RUNNING, pid=spawned.pid,
                                   pstart=spawned.start_time, started=now,
                                   deadline=run.deadline)
            if core.store.job(job_id) is not None:
                core.store.update_job(job_id, state=JobState.RUNNING)
                where = self.resources.get(slot[0])
                core.store.add_event(job_id, f"Task {task_id} started on "
                                     f"{where.name if where else LOCAL} (pid {spawned.pid})")
        if stop:
            self._begin_stop(run, stop)
        self._reap()

    async def _start_remote(self, job_id: str, slot: Slot) -> None:
        """Start a job's task through its resource's backend (handle stored first)."""
        core = self.core
        startable = self._startable(job_id, slot)
        if startable is None:
            return
        job, app = startable
        resource = self.resources.get(slot[0])
        assert resource is not None
        task_id, task_dir, files, env = self._new_task(job, app, slot)
        handle: dict[str, Any] | None = None
        try:
            backend = self._backend(resource)
            spec = await asyncio.get_running_loop().run_in_executor(
                self.pool, _prepare_remote, app, job.inputs, task_dir, files, env, task_id)
            handle = backend.handle_for(spec)
            core.store.update_task(task_id, handle=json.dumps(handle))
            handle = await backend.launch(spec, handle)
        except Exception as exc:  # the resource's failure: this job fails, others go on
            stop = self.starting.pop(job_id, None)
            what = str(exc) if isinstance(exc, StagingError) else \
                f"{resource.name}: {type(exc).__name__}: {exc}"
            if handle is not None and not isinstance(exc, StagingError):
                self._spawn_bg(self._remove_quietly(self._backend(resource), handle))
            await self._record_end(task_id, job_id, app, task_dir, None, stop,
                                   start_error=what)
            self._release(slot)
            return
        stop = self.starting.pop(job_id, None)
        now = time.time()
        limit = app.time_limit
        run = Running(task_id, job_id, job.app_id, slot, task_dir, 0, None, None,
                      deadline=now + limit if limit else None, backend=backend, handle=handle)
        self.running[task_id] = run
        with core.store.tx():
            core.store.update_task(task_id, state=TaskState.RUNNING, handle=json.dumps(handle),
                                   started=now, deadline=run.deadline)
            if core.store.job(job_id) is not None:
                core.store.add_event(job_id, f"Task {task_id} started on {resource.name} "
                                     f"({resource.kind}: {_describe(handle)})")
        if stop:
            self._begin_stop(run, stop)
        self._spawn_bg(self._watch(run))

    async def _watch(self, run: Running) -> None:
        """Wait for a backend task to end (riding out dropped connections), then finish it."""
        assert run.backend is not None and run.handle is not None
        delay = 1.0
        while True:
            try:
                code, why = await run.backend.wait(run.handle, lambda s, w: self._report(run, s, w))
                break
            except Exception as exc:
                if delay > 64:
                    code, why = None, f"lost contact with {run.backend.resource.name}: {exc}"
                    break
                log.warning("task %s: watching failed (%s); retrying in %g s", run.task_id,
                            exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        run.lost = why or None
        if not run.finishing:
            self._finish(run, code)

    def _report(self, run: Running, state: JobState, why: str | None) -> None:
        """A backend says where its task is (SCHEDULED while queued there, RUNNING)."""
        if run.reported == (state, why) or run.finishing:
            return
        run.reported = (state, why)
        job = self.core.store.job(run.job_id)
        if job is None or job.state.is_terminal:
            return
        with self.core.store.tx():
            self.core.store.update_job(run.job_id, state=state, info=why)
            self.core.store.add_event(run.job_id, f"Task {run.task_id} {state.value.lower()}"
                                      + (f": {why}" if why else ""))

    async def _remove_quietly(self, backend: Backend, handle: dict[str, Any]) -> None:
        try:
            await backend.remove(handle)
        except Exception as exc:
            log.warning("could not clean up %s on %s: %s", handle, backend.resource.name, exc)

    def _input_files(self, app: Application, inputs: dict[str, Any]) -> dict[str, Path]:
        """Stored paths of the file URIs among the inputs (missing ones are left out)."""
        out: dict[str, Path] = {}
        for _, uris in app.file_inputs(inputs):
            for uri in uris:
                row = self.core.store.file(canonical_uri(uri, self.core.url) or "")
                if row:
                    out[uri] = Path(row["path"])
        return out

    def _task_env(self, token: str, job_id: str, task_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        env.update(EVEREST_URL=self.core.task_url, EVEREST_TASK_TOKEN=token,
                   EVEREST_JOB_ID=job_id, EVEREST_TASK_ID=task_id)
        return env

    # -- watching --------------------------------------------------------------------------

    def _reap(self) -> None:
        """Collect children that have exited (called on SIGCHLD and by the sweep)."""
        for run in list(self.running.values()):
            if run.popen is not None and not run.finishing:
                code = run.popen.poll()
                if code is not None:
                    self._finish(run, code)

    def _sweep(self, now: float) -> None:
        grace = self.settings.kill_grace
        for run in list(self.running.values()):
            if run.finishing:
                continue
            if run.popen is None and run.backend is None:  # adopted: not our child
                code = processes.read_exit_status(run.dir)
                if code is not None:
                    self._finish(run, code)
                    continue
                if not processes.is_alive(run.pid, run.pstart):
                    # the exit file is written before the wrapper exits; look once more
                    self._finish(run, processes.read_exit_status(run.dir))
                    continue
            if run.stop_reason is None and run.deadline is not None and now >= run.deadline:
                self._begin_stop(run, TaskStop.TIMEOUT)
            elif run.stop_reason is not None and run.stop_at is not None:
                if run.signals_sent == 1 and now >= run.stop_at + grace:
                    self._signal(run, signal.SIGTERM)
                elif run.signals_sent == 2 and now >= run.stop_at + 2 * grace:
                    self._signal(run, signal.SIGKILL)

    def _signal(self, run: Running, sig: int) -> None:
        run.signals_sent += 1
        if run.backend is not None:
            self._spawn_bg(self._signal_remote(run, sig))
            return
        if processes.signal_group(run.pid, sig, run.pstart):
            log.info("task %s: sent %s", run.task_id, signal.Signals(sig).name)

    async def _signal_remote(self, run: Running, sig: int) -> None:
        assert run.backend is not None and run.handle is not None
        try:
            await run.backend.signal(run.handle, sig)
            log.info("task %s: sent %s", run.task_id, signal.Signals(sig).name)
        except Exception as exc:  # the next escalation step tries again
            log.warning("task %s: sending %s failed: %s", run.task_id,
                        signal.Signals(sig).name, exc)

    def _begin_stop(self, run: Running, reason: TaskStop) -> None:
        if run.stop_reason is not None:
            if reason in (TaskStop.SHUTDOWN, TaskStop.DELETE):
                run.stop_reason = reason
            return
        run.stop_reason = reason
        run.stop_at = time.time()
        self.core.store.update_task(run.task_id, stop_reason=reason.value, stop_at=run.stop_at)
        if self.core.store.job(run.job_id) is not None:
            what = _STOP_EVENT[reason]
            self.core.store.add_event(run.job_id, f"Task {run.task_id}: {what}, interrupting")
        self._signal(run, signal.SIGINT)

    def stop_job(self, job_id: str, reason: TaskStop) -> bool:
        """Stop a job's task for ``reason`` (cancel/delete); True if a process is stopping.

        A queued job is just taken off its queue (the caller records its new state).
        """
        for queue in self.queues.values():
            if job_id in queue:
                queue.remove(job_id)
        if job_id in self.starting:
            self.starting[job_id] = reason
            return True
        for run in self.running.values():
            if run.job_id == job_id:
                if not run.finishing:  # a finishing task's end is being recorded as it is
                    self._begin_stop(run, reason)
                return True
        return False

    # -- ending a task ---------------------------------------------------------------------

    def _finish(self, run: Running, code: int | None) -> None:
        run.finishing = True
        app = self.core.catalog.apps.get(run.app_key)
        self._spawn_bg(self._finish_async(run, code, app))

    async def _finish_async(self, run: Running, code: int | None,
                            app: Application | None) -> None:
        # The slot is free once the process has ended: start the next task first, so its
        # process runs while this one's end is recorded.
        self._release(run.slot)
        await asyncio.sleep(0)
        try:
            if run.backend is not None:
                await self._bring_back(run)
            await self._record_end(run.task_id, run.job_id, app, run.dir, code,
                                   run.stop_reason, deadline=run.deadline, lost=run.lost)
        except Exception as exc:
            log.exception("recording the end of task %s failed", run.task_id)
            self._fail_internal(run.job_id, exc)
        finally:
            self.running.pop(run.task_id, None)

    async def _bring_back(self, run: Running) -> None:
        """Fetch a backend task's work folder (outputs), then remove it there."""
        assert run.backend is not None and run.handle is not None
        for attempt in range(4):
            try:
                await run.backend.collect(run.handle, run.dir)
                break
            except Exception as exc:
                log.warning("task %s: fetching outputs failed (%s)", run.task_id, exc)
                await asyncio.sleep(0.5 * 2 ** attempt)
        if not self.settings.keep_work:
            await self._remove_quietly(run.backend, run.handle)

    async def _record_end(self, task_id: str, job_id: str, app: Application | None,
                          task_dir: Path, code: int | None, stop: TaskStop | None, *,
                          start_error: str | None = None, deadline: float | None = None,
                          lost: str | None = None) -> None:
        """Collect outputs, decide the job's state (or a retry) and record it all."""
        core = self.core
        job = core.store.job(job_id)
        ok = code == 0 and stop is None and start_error is None
        outcome: dict[str, Any] = {"result": {}, "files": [], "error": None, "stderr": ""}
        if job is not None and app is not None and start_error is None:
            # inline: small files are read, file outputs are renamed, not copied
            outcome = _collect(core.files, app, job_id, task_dir, ok)
        if not self.settings.keep_work:
            self._trash.append(task_dir)
        if job is None:  # deleted while it ran
            core.store.update_task(task_id, state=TaskState.CANCELLED, exit_code=code)
            return
        state, info = _verdict(task_id, code, stop, start_error, outcome, app, lost)
        # a task that ran and failed (or was lost) may succeed again; one that could not
        # start (no such command, a deleted input file) will not
        retry = (state is JobState.FAILED and stop is None and start_error in (None, "LOST")
                 and app is not None and app.retry_failed_tasks
                 and job.attempt + 1 < self.settings.max_attempts)
        with core.store.tx():
            core.store.update_task(task_id, state=TaskState(state.value), exit_code=code)
            for uri, name, path, length in outcome["files"]:
                core.store.add_file(uri, job.owner, "job", job_id, name, path, length)
            if retry:
                core.store.add_event(job_id, f"Task {task_id} failed ({info}); retrying, "
                                     f"attempt {job.attempt + 2} of {self.settings.max_attempts}")
                core.store.update_job(job_id, state=JobState.READY, attempt=job.attempt + 1)
            else:
                if state is JobState.DONE:
                    core.store.add_event(job_id, f"Task {task_id} finished with exit code 0")
                core.store.update_job(job_id, state=state, result=outcome["result"],
                                      info=info)
                core.store.add_event(job_id, f"Job {state}" + (f": {info}" if info else ""))
                core.tokens.revoke_job(job_id)
        if retry:
            assert app is not None
            self.enqueue(job_id, app)
        log.debug("task %s ended: %s%s", task_id, state, f" ({info})" if info else "")

    def _end_without_task(self, job_id: str, state: JobState, info: str) -> None:
        with self.core.store.tx():
            self.core.store.update_job(job_id, state=state, info=info,
                                       result={} if state is not JobState.CANCELLED else None)
            self.core.store.add_event(job_id, f"Job {state}: {info}")
        self.core.tokens.revoke_job(job_id)

    # -- restart ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Pick up after a restart (or ``kill -9``): requeue, re-adopt, or fail lost tasks.

        - READY jobs are queued again in submission order.
        - A task whose wrapper left an exit status ends with it (outputs collected).
        - A task whose process still runs (same pid *and* start time) is re-adopted: it
          keeps its slot, its deadline and any cancel in progress.
        - A task that was still being staged never started: its job is queued again.
        - A task whose process is gone without a status FAILS with an info saying so.
        - A task on another resource is asked about through its stored handle: started
          ones are watched again (their outputs collected when they end), ones that never
          started are cleaned up there and queued again (see :meth:`_readopt`).
        """
        store = self.core.store
        for task in store.tasks_in_states((TaskState.STAGING, TaskState.RUNNING)):
            job = store.job(task.job_id)
            app = self.core.catalog.apps.get(job.app_id) if job else None
            service = bool(app and app.is_service)
            on = self.resources.get(task.resource or self.local_id)
            if on is not None and on.kind != "local":
                self._spawn_bg(self._readopt(task, job, app, service))
                continue
            slot = (on.id if on is not None else self.local_id, service)
            task_dir = Path(task.dir)
            pid = task.pid or processes.read_pid(task_dir)
            code = processes.read_exit_status(task_dir)
            alive = pid is not None and processes.is_alive(pid, task.pstart)
            if task.state is TaskState.STAGING and pid is None and code is None:
                store.delete_task(task.id)  # it never ran: the attempt starts afresh
                if job is not None and job.state in ACTIVE_STATES:
                    store.update_job(job.id, state=JobState.READY)
                    store.add_event(job.id, f"Task {task.id} was being prepared when the "
                                    "server stopped; queued again")
                continue
            run = Running(task.id, task.job_id, job.app_id if job else "", slot, task_dir,
                          pid or 0, task.pstart, None, deadline=task.deadline,
                          stop_reason=_task_stop(task.stop_reason), stop_at=task.stop_at,
                          signals_sent=1 if task.stop_reason else 0)
            self.running[task.id] = run
            self.busy[slot] += 1
            if code is not None or not alive:
                log.info("task %s ended while the server was down (status %s)", task.id, code)
                if code is None and run.stop_reason is None:
                    self._spawn_bg(self._lost(run, app))
                else:
                    self._finish(run, code)
            else:
                log.info("re-adopting task %s (pid %s)", task.id, pid)
                if job is not None:
                    store.add_event(job.id, f"Task {task.id} re-adopted after a server "
                                    f"restart (pid {pid})")
        for job in store.jobs_in_states((JobState.READY, JobState.SCHEDULED)):
            app = self.core.catalog.apps.get(job.app_id)
            if job.state is JobState.SCHEDULED:
                continue  # its task was handled above
            if app is None:
                self._end_without_task(job.id, JobState.FAILED, f"application {job.app_alias} is "
                                       "no longer offered by this server")
                continue
            self.enqueue(job.id, app, job)
        self._pump()

    async def _readopt(self, task: TaskRow, job: JobRow | None, app: Application | None,
                       service: bool) -> None:
        """After a restart: watch a backend task again, or queue its job again."""
        store = self.core.store
        resource = self.resources.get(task.resource or "")
        if resource is None:
            store.update_task(task.id, state=TaskState.FAILED)
            if job is not None and job.state in ACTIVE_STATES:
                self._end_without_task(job.id, JobState.FAILED, f"task {task.id} ran on resource "
                                       f"{task.resource}, which the server no longer has")
            return
        slot = (resource.id, service)
        self.busy[slot] += 1
        backend = self._backend(resource)
        handle = json.loads(task.handle) if task.handle else None
        try:
            started = handle is not None and await backend.started(handle)
        except Exception as exc:
            log.warning("task %s: cannot ask %s about it (%s)", task.id, resource.name, exc)
            started = True  # do not start it twice: watch it (retrying) instead
        if not started:
            if handle is not None:
                await self._remove_quietly(backend, handle)
            store.delete_task(task.id)  # it never ran: the attempt starts afresh
            self._release(slot)
            if job is not None and app is not None and job.state in ACTIVE_STATES:
                store.update_job(job.id, state=JobState.READY)
                store.add_event(job.id, f"Task {task.id} had not started on {resource.name} "
                                "when the server stopped; queued again")
                self.enqueue(job.id, app)
            return
        run = Running(task.id, task.job_id, job.app_id if job else "", slot, Path(task.dir),
                      0, None, None, deadline=task.deadline,
                      stop_reason=_task_stop(task.stop_reason),
                      stop_at=task.stop_at, signals_sent=1 if task.stop_reason else 0,
                      backend=backend, handle=handle)
        self.running[task.id] = run
        store.update_task(task.id, state=TaskState.RUNNING, handle=json.dumps(handle))
        if job is not None:
            store.add_event(job.id, f"Task {task.id} re-adopted on {resource.name} after a "
                            f"server restart ({_describe(handle)})")
        log.info("re-adopting task %s on %s", task.id, resource.name)
        await self._watch(run)

    async def _lost(self, run: Running, app: Application | None) -> None:
        try:
            await self._record_end(run.task_id, run.job_id, app, run.dir, None, None,
                                   start_error="LOST")
        finally:
            self.running.pop(run.task_id, None)
            self._release(run.slot)


def _prepare_and_spawn(app: Application, inputs: dict[str, Any], task_dir: Path,
                       files: dict[str, Path], env: dict[str, str],
                       user: TaskUser | None = None) -> processes.Spawned:
    """Make the work dir, stage, build the command, start the process (as ``user`` when
    given) (blocking)."""
    work = task_dir / "work"
    if task_dir.exists():
        shutil.rmtree(task_dir)
    work.mkdir(parents=True)
    values = stage_inputs(app, inputs, work, files)
    argv = resolve_executable(build_argv(app.command, values), work, env.get("PATH"))
    return processes.spawn(argv, work, task_dir, env, user)


def _prepare_remote(app: Application, inputs: dict[str, Any], task_dir: Path,
                    files: dict[str, Path], env: dict[str, str], task_id: str) -> TaskSpec:
    """Stage a backend task's folder here: work dir, inputs, the ``argv`` file (blocking).

    The command is not resolved against this machine's PATH: it runs elsewhere."""
    work = task_dir / "work"
    if task_dir.exists():
        shutil.rmtree(task_dir)
    work.mkdir(parents=True)
    values = stage_inputs(app, inputs, work, files)
    argv = build_argv(app.command, values)
    write_argv(task_dir, argv)
    task_dir.chmod(0o700)  # it will hold the task's token; copies keep this mode
    requirements = app.config.get("resourceRequirements") or {}
    # an app picks its container image with config.image or, per job, an input "image"
    image = (inputs.get("image") if "image" in app.inputs else None) or app.config.get("image")
    return TaskSpec(task_id, task_dir, argv, env, app.time_limit,
                    requirements if isinstance(requirements, dict) else {},
                    image if isinstance(image, str) else None)


def _describe(handle: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in handle.items() if k != "dir") or \
        f"folder {handle.get('dir')}"


def _remove_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _collect(files_store: Any, app: Application, job_id: str, task_dir: Path,
             ok: bool) -> dict[str, Any]:
    """Read outputs and the tail of stderr of a finished task."""
    work = task_dir / "work"
    published: list[tuple[str, str, str, int]] = []
    taken: set[str] = set()

    def publish(path: Path, name: str) -> str:
        uri, dest, length = files_store.publish(job_id, path, name, taken)
        published.append((uri, dest.name, str(dest), length))
        return uri

    error = None
    try:
        result = collect_outputs(app, work, publish, strict=ok)
    except StagingError as exc:
        error = str(exc)
        result = collect_outputs(app, work, publish, strict=False)
    return {"result": result, "files": published, "error": error,
            "stderr": _last_line(work / "stderr")}


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _verdict(task_id: str, code: int | None, stop: TaskStop | None, start_error: str | None,
             outcome: dict[str, Any], app: Application | None,
             lost: str | None = None) -> tuple[JobState, str | None]:
    """The job's final state and info for how its task ended."""
    if stop in STOP_INFO:
        return JobState.CANCELLED, STOP_INFO[stop]
    if stop is TaskStop.TIMEOUT:
        limit = app.time_limit if app else None
        return JobState.FAILED, (f"task {task_id} exceeded the time limit of {limit or 0:g} s "
                                 "and was stopped")
    gone = (f"task {task_id}: its process ended while the local server was not running and "
            "left no exit status")
    if start_error == "LOST":
        return JobState.FAILED, gone
    if start_error is not None:
        return JobState.FAILED, f"task {task_id} could not start: {start_error}"
    if code is None and lost:
        return JobState.FAILED, f"task {task_id}: {lost}"
    if code is None:
        return JobState.FAILED, gone
    if code != 0:
        tail = f": {outcome['stderr']}" if outcome["stderr"] else ""
        status = processes.describe_status(code)
        return JobState.FAILED, f"task {task_id} failed with {status}{tail}"
    if outcome["error"]:
        return JobState.FAILED, f"task {task_id}: {outcome['error']}"
    return JobState.DONE, None


def _task_stop(value: str | None) -> TaskStop | None:
    """A stored stop reason as read back after a restart."""
    return TaskStop(value) if value else None
