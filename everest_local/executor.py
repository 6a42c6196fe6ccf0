"""Running jobs: queues, slots, starting and watching tasks, cancel, time limits.

A job here has one task; a retry is a new attempt with task id ``<jobId>-0-<attempt>``
(task numbers and attempts both count from 0 — Everest's numbering is not public).
Life cycle: READY (queued) -> SCHEDULED (work dir being staged; on Slurm, also while the
batch job is pending) -> RUNNING -> DONE, FAILED or CANCELLED.

A job runs on one resource (see :mod:`everest_local.resources`), chosen when it is queued.
Each resource has its own queues: on this machine at most ``slots`` batch tasks run at
once, elsewhere the resource's ``slots``; services (see ``ServerSettings``) use their own
pool. Every task, on this machine or elsewhere, takes one path: staged into
``<task-dir>/work`` here, then started, watched, signalled and brought back through its
resource's backend (:mod:`everest_local.backends`, local processes included).

Cancel sends SIGINT to the task's processes, SIGTERM after ``kill_grace`` seconds and
SIGKILL after twice that; the job turns CANCELLED when the task has ended, as on
Everest. A time limit stops the task the same way and fails the job. How an ended task
becomes the job's state is :mod:`everest_local.outcome`; picking tasks up after a restart
is :mod:`everest_local.recovery`.

Threading: all state and all database access live on the event loop thread; staging and
other blocking file work run in a small thread pool and report back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from everest_app.descriptor import Application
from everest_app.states import JobState, TaskState
from everest_local import outcome
from everest_local.auth import Tokens
from everest_local.backends import Backend, TaskSpec, make_backend
from everest_local.catalog import Catalog
from everest_local.containment import open_containment
from everest_local.disk import DiskReserve, is_disk_full
from everest_local.fairshare import FairQueue
from everest_local.files import FileStore, canonical_uri
from everest_local.outcome import STOP_EVENT, TaskEnd, TaskStop
from everest_local.resources import LOCAL, Resource, Resources
from everest_local.settings import ServerSettings
from everest_local.staging import StagingError, build_argv, stage_inputs
from everest_local.store import JobRow, Store, TaskRow
from everest_local.task_users import TaskAccounts, tasks_root
from everest_local.workdir import UnsafeFolder

__all__ = ["Executor", "Running", "ServerParts", "TaskStop"]

log = logging.getLogger(__name__)


class ServerParts(Protocol):
    """What the executor needs of the server it runs in (:class:`everest_local.core.Core`):
    named here so this module does not import the one that imports it."""

    settings: ServerSettings
    store: Store
    catalog: Catalog
    files: FileStore
    tokens: Tokens
    resources: Resources
    task_accounts: TaskAccounts
    disk: DiskReserve
    url: str
    task_url: str


Slot = tuple[str, bool]  # (resource id, service?): one queue and one slot count each
_RM_BATCH = 500  # task folders per `rm` process
TASK_TOKEN_LIFETIME = 365 * 24 * 3600  # revoked when the job ends anyway
_ENV_DROP = ("EVEREST_TOKEN", "EVEREST_TASK_TOKEN", "EVEREST_PROFILE")
DISK_CHECK_EVERY = 1.0  # seconds between looks at the task folders' free space
STARTERS_READY = 4  # most task starters kept ready per task account (fewer with fewer slots)
DISK_FULL_BELOW = 256 << 10  # free bytes under which that disk counts as full


@dataclass
class Running:
    """A task the executor watches (started here or re-adopted after a restart)."""

    task_id: str
    job_id: str
    app_key: str
    slot: Slot
    dir: Path
    backend: Backend
    handle: dict[str, Any]
    deadline: float | None = None
    stop_reason: TaskStop | None = None
    stop_at: float | None = None
    signals_sent: int = 0
    finishing: bool = False
    reported: tuple[JobState, str | None] | None = None
    lost: str | None = None  # why it ended without an exit status, in its backend's words
    refused: str | None = None  # why its work folder, brought back, is not safe to read

    @property
    def work(self) -> Path:
        return self.dir / "work"


class Executor:
    """Queues jobs, starts their tasks in slots, watches them, records how they end."""

    def __init__(self, core: ServerParts):
        self.core = core
        self.settings = core.settings
        self.tasks_root = tasks_root(core.settings.data_dir, core.task_accounts)
        self.containment = open_containment(core.settings.task_containment, self.tasks_root,
                                            ready=min(core.settings.slots, STARTERS_READY))
        self.resources = core.resources
        self.local_id = self.resources.by_name[LOCAL].id
        self.queues: dict[Slot, FairQueue] = {}
        self.busy: Counter[Slot] = Counter()
        self.user_busy: Counter[tuple[bool, str]] = Counter()  # (service?, owner) -> slots
        self._holders: dict[str, tuple[bool, str]] = {}  # job id -> its user_busy key
        self.backends: dict[str, Backend] = {}
        self.running: dict[str, Running] = {}
        self.starting: dict[str, TaskStop | None] = {}  # job id -> stop asked while staging
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="task-io")
        self._bg: set[asyncio.Task] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._sigchld = False
        self._trash: list[Path] = []  # finished task dirs, removed in batches off the loop
        self._disk_checked = 0.0
        self._disk_checking = False
        self._removers: list[subprocess.Popen] = []  # `rm -rf` of earlier batches
        self._base_env: dict[str, str] | None = None  # this server's environment, for tasks

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin watching tasks (SIGCHLD where possible, plus a periodic sweep)."""
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
            now = time.time()
            self._sweep(now)
            if self.running and not self._disk_checking and \
                    now >= self._disk_checked + DISK_CHECK_EVERY:
                self._disk_checked, self._disk_checking = now, True
                self.spawn_bg(self._check_disk())
            self._empty_trash()
            self.containment.tidy()
        except Exception:  # never let one bad task stop the watch of the others
            log.exception("task sweep failed")
        self._schedule_tick()

    def _empty_trash(self) -> None:
        """Remove the finished task folders in one ``rm`` process per batch: a process of
        its own, not a thread of the server's, so the many small unlinks never hold the
        GIL the event loop needs (a thread's rmtree delayed requests and task starts)."""
        self._removers = [p for p in self._removers if p.poll() is None]
        while self._trash:
            batch, self._trash = self._trash[:_RM_BATCH], self._trash[_RM_BATCH:]
            try:
                self._removers.append(subprocess.Popen(
                    ["rm", "-rf", "--one-file-system", "--", *map(str, batch)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, close_fds=True))
            except OSError:  # no process to spare: the slower way, still off the loop
                self.pool.submit(_remove_dirs, batch)

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
        for remover in self._removers:
            try:
                remover.wait(30)
            except subprocess.TimeoutExpired:
                log.warning("removing finished task folders takes long; left to finish")
        if self._sigchld:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception:
                log.exception("closing the backend of %s failed", backend.resource.name)
        self.containment.close()
        self.pool.shutdown(wait=True)

    def spawn_bg(self, coro: Any) -> None:
        """Run ``coro`` in the background; shutdown waits for it, a failure is logged."""
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
        self.queues.setdefault((resource.id, app.is_service), FairQueue()).append(job_id,
                                                                             job.owner)
        self.pump()

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

    def pump(self) -> None:
        """Start queued jobs while their slots have room, each user in turn
        (:mod:`everest_local.fairshare`), none past ``max_running_per_user`` batch tasks."""
        for slot, queue in self.queues.items():
            limit = self._limit(slot)
            service = slot[1]
            cap = 0 if service else self.settings.max_running_per_user
            while queue and self.busy[slot] < limit:
                picked = queue.take(lambda user, s=service: self.user_busy[(s, user)], cap)
                if picked is None:  # everyone waiting is at the cap
                    break
                job_id, owner = picked
                self.hold(slot, job_id, owner)
                self.spawn_bg(self._start_guarded(job_id, slot))

    def hold(self, slot: Slot, job_id: str, owner: str) -> None:
        """Count a slot of ``slot`` as taken by ``owner``'s job (until :meth:`release`)."""
        self.busy[slot] += 1
        key = (slot[1], owner)
        self.user_busy[key] += 1
        self._holders[job_id] = key

    def release(self, slot: Slot, job_id: str) -> None:
        """``job_id``'s task no longer holds its slot: let the next one start."""
        self.busy[slot] -= 1
        key = self._holders.pop(job_id, None)
        if key is not None:
            self.user_busy[key] -= 1
            if not self.user_busy[key]:
                del self.user_busy[key]
        self.pump()

    def backend(self, resource: Resource) -> Backend:
        """The (one, shared) backend of ``resource``."""
        backend = self.backends.get(resource.id)
        if backend is None:
            backend = self.backends[resource.id] = make_backend(
                resource, self.core.task_accounts, self.containment)
        return backend

    # -- starting a task -------------------------------------------------------------------

    async def _start_guarded(self, job_id: str, slot: Slot) -> None:
        """Start a job's task; an unexpected error fails the job instead of losing a slot."""
        try:
            await self._start(job_id, slot)
        except Exception as exc:
            log.exception("starting job %s failed", job_id)
            self.starting.pop(job_id, None)
            self.fail_internal(job_id, exc)
            self.release(slot, job_id)

    def fail_internal(self, job_id: str, exc: Exception) -> None:
        """Fail a job for an error of this server's own (logged by the caller)."""
        try:
            if self.core.store.job(job_id) is not None:
                self.end_without_task(job_id, JobState.FAILED, f"internal error of the local "
                                      f"server: {type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not record the failure of job %s", job_id)

    def _startable(self, job_id: str, slot: Slot) -> tuple[JobRow, Application] | None:
        """The READY job and its app, or None (slot released, job failed if app is gone)."""
        job = self.core.store.job(job_id)
        found = self.core.catalog.apps.get(job.app_id) if job else None
        if job is None or job.state is not JobState.READY:
            self.release(slot, job_id)
            return None
        if found is None:
            self.end_without_task(job_id, JobState.FAILED, f"application {job.app_alias} is no "
                                  "longer offered by this server")
            self.release(slot, job_id)
            return None
        return job, found

    def _new_task(self, job: JobRow, app: Application, slot: Slot) -> TaskSpec:
        """Record a STAGING task of ``job`` on the slot's resource, its job SCHEDULED; return
        its spec (folder, environment with its fresh token; no arguments yet)."""
        core = self.core
        task_id = f"{job.id}-0-{job.attempt}"
        task_dir = self.tasks_root / task_id
        with core.store.tx():
            token = core.tokens.issue(job.owner, f"task {task_id}", TASK_TOKEN_LIFETIME, job.id)
            core.store.insert_task(TaskRow(task_id, job.id, TaskState.STAGING, str(task_dir),
                                           None, None, None, None, None, None, None,
                                           resource=slot[0]))
            core.store.update_job(job.id, state=JobState.SCHEDULED)
        self.starting[job.id] = None
        requirements = app.config.get("resourceRequirements") or {}
        # an app picks its container image with config.image or, per job, an input "image"
        image = (job.inputs.get("image") if "image" in app.inputs else None) or \
            app.config.get("image")
        return TaskSpec(task_id, task_dir, [], self._task_env(token, job.id, task_id),
                        app.time_limit, requirements if isinstance(requirements, dict) else {},
                        image if isinstance(image, str) else None, owner=job.owner)

    async def _start(self, job_id: str, slot: Slot) -> None:
        """Stage a job's task, launch it through its resource's backend, record it RUNNING."""
        core = self.core
        startable = self._startable(job_id, slot)
        if startable is None:
            return
        job, app = startable
        resource = self.resources.get(slot[0])
        assert resource is not None
        spec = self._new_task(job, app, slot)
        backend = self.backend(resource)
        files = self._input_files(app, job.inputs)
        handle: dict[str, Any] | None = None
        try:
            try:
                if files or not backend.stages_on_loop:  # copying files takes a while
                    await asyncio.get_running_loop().run_in_executor(
                        self.pool, _stage, backend, app, job.inputs, spec, files)
                else:  # small work (app files, scalar inputs): a thread hop would cost more
                    _stage(backend, app, job.inputs, spec, files)
            except OSError as exc:  # this machine's file system, whatever the resource
                raise StagingError(str(exc)) from exc
            handle = backend.handle_for(spec)
            if backend.handle_before_launch:
                core.store.update_task(spec.task_id, handle=json.dumps(handle))
            handle = await backend.launch(spec, handle)
        except Exception as exc:  # the resource's failure: this job fails, others go on
            stop = self.starting.pop(job_id, None)
            what = str(exc) if isinstance(exc, StagingError) else \
                f"{resource.name}: {type(exc).__name__}: {exc}"
            if handle is not None and not isinstance(exc, StagingError):
                self.spawn_bg(self.remove_quietly(backend, handle))
            await self.record_end(spec.task_id, job_id, app, spec.dir,
                                  TaskEnd(stop=stop, start_error=what))
            self.release(slot, job_id)
            return
        stop = self.starting.pop(job_id, None)
        now = time.time()
        limit = app.time_limit
        run = Running(spec.task_id, job_id, job.app_id, slot, spec.dir, backend, handle,
                      deadline=now + limit if limit else None)
        self.running[spec.task_id] = run
        with core.store.tx():
            core.store.update_task(spec.task_id, state=TaskState.RUNNING,
                                   handle=json.dumps(handle), pid=handle.get("pid"),
                                   pstart=handle.get("pstart"), started=now,
                                   deadline=run.deadline)
            if core.store.job(job_id) is not None:
                if backend.running_at_launch:
                    core.store.update_job(job_id, state=JobState.RUNNING)
                core.store.add_event(job_id, f"Task {spec.task_id} started on {resource.name} "
                                     f"({backend.describe(handle)})")
        if stop:
            self._begin_stop(run, stop)
        self.spawn_bg(self.watch(run))

    async def watch(self, run: Running) -> None:
        """Wait for a task to end (riding out dropped connections), then finish it."""
        delay = 1.0
        while True:
            try:
                code, why = await run.backend.wait(run.handle,
                                                   lambda s, w: self._report(run, s, w))
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

    async def remove_quietly(self, backend: Backend, handle: dict[str, Any]) -> None:
        """Remove what a task left on its resource; a failure is only logged."""
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
        if self._base_env is None:  # os.environ decodes each item on every read: once
            self._base_env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        env = dict(self._base_env)
        env.update(EVEREST_URL=self.core.task_url, EVEREST_TASK_TOKEN=token,
                   EVEREST_JOB_ID=job_id, EVEREST_TASK_ID=task_id)
        return env

    # -- watching --------------------------------------------------------------------------

    def _reap(self) -> None:
        """Let the backends look for ended tasks (called on SIGCHLD and by the sweep)."""
        for backend in self.backends.values():
            backend.poll()

    def _sweep(self, now: float) -> None:
        grace = self.settings.kill_grace
        for run in list(self.running.values()):
            if run.finishing:
                continue
            if run.stop_reason is None and run.deadline is not None and now >= run.deadline:
                self._begin_stop(run, TaskStop.TIMEOUT)
            elif run.stop_reason is not None and run.stop_at is not None:
                if run.signals_sent == 1 and now >= run.stop_at + grace:
                    self._signal(run, signal.SIGTERM)
                elif run.signals_sent == 2 and now >= run.stop_at + 2 * grace:
                    self._signal(run, signal.SIGKILL)

    async def _check_disk(self) -> None:
        """When the task folders' disk is full, stop the running task whose folder holds
        the most of it (at least a tenth of the disk: the one filling it), so that its job
        fails saying so instead of running on with the disk full for everyone."""
        try:
            loop = asyncio.get_running_loop()
            usage = await loop.run_in_executor(self.pool, shutil.disk_usage, self.tasks_root)
            if usage.free >= DISK_FULL_BELOW:
                return
            runs = [r for r in self.running.values() if r.stop_reason is None and
                    not r.finishing]
            sizes = await loop.run_in_executor(self.pool, _folder_sizes, [r.dir for r in runs])
            held, run = max(zip(sizes, runs, strict=True), key=lambda pair: pair[0],
                            default=(0, None))
            if run is None or held < usage.total / 10 or run.stop_reason is not None:
                return
            log.warning("the disk of %s is full; stopping task %s, whose folder holds %d "
                        "bytes", self.tasks_root, run.task_id, held)
            self._begin_stop(run, TaskStop.DISK_FULL)
        finally:
            self._disk_checking = False

    def _signal(self, run: Running, sig: int) -> None:
        run.signals_sent += 1
        self.spawn_bg(self._send(run, sig))

    async def _send(self, run: Running, sig: int) -> None:
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
        self._signal(run, signal.SIGINT)  # first: a full disk must not keep it running

        def record() -> None:
            self.core.store.update_task(run.task_id, stop_reason=reason.value,
                                        stop_at=run.stop_at)
            if self.core.store.job(run.job_id) is not None:
                what = STOP_EVENT[reason]
                self.core.store.add_event(run.job_id, f"Task {run.task_id}: {what}, "
                                          "interrupting")

        self.core.disk.room(record)

    def stop_job(self, job_id: str, reason: TaskStop) -> bool:
        """Stop a job's task for ``reason`` (cancel/delete); True if a task is stopping.

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
        self.spawn_bg(self._finish_async(run, code, app))

    async def _finish_async(self, run: Running, code: int | None,
                            app: Application | None) -> None:
        # The slot is free once the task has ended: start the next task first, so it runs
        # while this one's end is recorded.
        self.release(run.slot, run.job_id)
        await asyncio.sleep(0)
        try:
            await self._bring_back(run)
            await self.record_end(run.task_id, run.job_id, app, run.dir,
                                  TaskEnd(code, run.stop_reason, lost=run.lost,
                                          refused=run.refused))
        except Exception as exc:
            log.exception("recording the end of task %s failed", run.task_id)
            self.fail_internal(run.job_id, exc)
        finally:
            self.running.pop(run.task_id, None)

    async def _bring_back(self, run: Running) -> None:
        """Fetch a task's work folder (outputs) from its resource, then remove it there."""
        for attempt in range(4):
            try:
                await run.backend.collect(run.handle, run.dir)
                break
            except UnsafeFolder as exc:  # trying again would not make it safe
                run.refused = str(exc)
                break
            except Exception as exc:
                log.warning("task %s: fetching outputs failed (%s)", run.task_id, exc)
                await asyncio.sleep(0.5 * 2 ** attempt)
        if not self.settings.keep_work:
            await self.remove_quietly(run.backend, run.handle)

    async def record_end(self, task_id: str, job_id: str, app: Application | None,
                         task_dir: Path, end: TaskEnd) -> None:
        """Collect outputs, decide the job's state (or a retry) and record it all."""
        core = self.core
        job = core.store.job(job_id)
        outputs = outcome.NO_OUTPUTS
        if end.refused:
            outputs = outcome.Outputs({}, [], refused=end.refused)
        elif job is not None and app is not None and end.start_error is None:
            # inline: small files are read, file outputs are renamed, not copied
            try:
                outputs = outcome.collect(core.files, app, job_id, task_dir, end.ok)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                await self._end_on_full_disk(task_id, job, task_dir, outputs)
                return
            outputs = self._within_quota(job.owner, outputs)
        if not self.settings.keep_work:
            self._trash.append(task_dir)
        if job is None:  # deleted while it ran
            core.store.update_task(task_id, state=TaskState.CANCELLED, exit_code=end.code)
            return
        state, info = outcome.verdict(task_id, end, outputs, app)
        retry = (state is JobState.FAILED and end.may_retry and app is not None
                 and app.retry_failed_tasks and job.attempt + 1 < self.settings.max_attempts)
        try:
            self._write_end(task_id, job, state, info, end, outputs, retry)
        except (OSError, sqlite3.OperationalError) as exc:
            if not is_disk_full(exc):
                raise
            await self._end_on_full_disk(task_id, job, task_dir, outputs)
            return
        if retry:
            assert app is not None
            self.enqueue(job_id, app)
        log.debug("task %s ended: %s%s", task_id, state, f" ({info})" if info else "")

    def _write_end(self, task_id: str, job: JobRow, state: JobState, info: str | None,
                   end: TaskEnd, outputs: outcome.Outputs, retry: bool) -> None:
        core, job_id = self.core, job.id
        with core.store.tx():
            core.store.update_task(task_id, state=TaskState(state.value), exit_code=end.code)
            for uri, name, path, length in outputs.files:
                core.store.add_file(uri, job.owner, "job", job_id, name, path, length)
            if retry:
                core.store.add_event(job_id, f"Task {task_id} failed ({info}); retrying, "
                                     f"attempt {job.attempt + 2} of {self.settings.max_attempts}")
                core.store.update_job(job_id, state=JobState.READY, attempt=job.attempt + 1)
            else:
                if state is JobState.DONE:
                    core.store.add_event(job_id, f"Task {task_id} finished with exit code 0")
                core.store.update_job(job_id, state=state, result=outputs.result, info=info)
                core.store.add_event(job_id, f"Job {state}" + (f": {info}" if info else ""))
                core.tokens.revoke_job(job_id)

    async def _end_on_full_disk(self, task_id: str, job: JobRow, task_dir: Path,
                                outputs: outcome.Outputs) -> None:
        """The data disk was too full to record a task's end (most likely the task filled
        it): remove the task's folder and its outputs, then fail the job saying so (with
        the disk reserve's help if even that does not fit)."""
        held = await asyncio.get_running_loop().run_in_executor(self.pool, _remove_counting,
                                                                task_dir)
        FileStore.remove_paths([path for _, _, path, _ in outputs.files])
        info = (f"task {task_id}: the server's data disk is full ({held / (1 << 20):.1f} MiB "
                "in the task's folder, now removed with its outputs); nothing of it was kept")
        log.warning("job %s: %s", job.id, info)

        def fail() -> None:
            with self.core.store.tx():
                self.core.store.update_task(task_id, state=TaskState.FAILED)
                self.end_without_task(job.id, JobState.FAILED, info)

        self.core.disk.room(fail)

    def _within_quota(self, owner: str, outputs: outcome.Outputs) -> outcome.Outputs:
        """The outputs, or none of their files when keeping them would take ``owner`` past
        ``max_stored_bytes`` (outputs count against the quota as uploads do): the job then
        fails saying so, and nothing of the files stays."""
        limit = self.settings.max_stored_bytes
        adding = sum(length for *_, length in outputs.files)
        if not (limit and adding):
            return outputs
        used = self.core.store.stored_bytes(owner)
        if used + adding <= limit:
            return outputs
        self.core.files.remove_paths([path for _, _, path, _ in outputs.files])
        return outcome.Outputs({}, [], f"its output files ({adding} bytes) were not kept: "
                               f"with your {used} bytes stored they would pass this server's "
                               f"limit of {limit} bytes per user", outputs.stderr)

    def end_without_task(self, job_id: str, state: JobState, info: str) -> None:
        """Give a job that has no running task its final state."""
        with self.core.store.tx():
            self.core.store.update_job(job_id, state=state, info=info,
                                       result={} if state is not JobState.CANCELLED else None)
            self.core.store.add_event(job_id, f"Job {state}: {info}")
        self.core.tokens.revoke_job(job_id)


def _stage(backend: Backend, app: Application, inputs: dict[str, Any], spec: TaskSpec,
           files: dict[str, Path]) -> None:
    """Make the task folder, stage the inputs, build the command (into ``spec.argv``) and
    let the backend finish the folder for its kind (blocking)."""
    try:  # two mkdirs, the usual case (no look first: each file system call counts here)
        os.mkdir(spec.dir, 0o700)
    except FileExistsError:  # left by an earlier try of this task
        shutil.rmtree(spec.dir)
        os.mkdir(spec.dir, 0o700)
    except FileNotFoundError:
        spec.dir.mkdir(mode=0o700, parents=True)
    os.chmod(spec.dir, 0o700)  # it will hold the task's token; copies keep this mode
    os.mkdir(spec.work)
    values = stage_inputs(app, inputs, spec.work, files)
    spec.argv = build_argv(app.command, values)
    backend.prepare(spec)


def _folder_sizes(folders: list[Path]) -> list[int]:
    """Bytes each folder's files take on disk (links not followed)."""
    sizes = []
    for folder in folders:
        held = 0
        for root, _, names in os.walk(folder):
            for name in names:
                try:
                    held += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
        sizes.append(held)
    return sizes


def _remove_counting(path: Path) -> int:
    """Remove a task folder; the bytes its files held (links are not followed)."""
    held = _folder_sizes([path])[0]
    shutil.rmtree(path, ignore_errors=True)
    return held


def _remove_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
