"""Picking up after a restart (or ``kill -9``): every unfinished task re-adopted, queued
again, or failed with the reason — one path for every kind of resource.

Everything this needs is in the database and where each task runs: the task row (state,
deadline, a stop in progress), its backend's handle (stored before launch on a remote
resource; the pid and its start time on this machine) and the wrapper's ``pid``/``exit``
files.

- READY jobs are queued again in submission order.
- A task whose backend says it never started (it was still being staged, or its launch
  was interrupted) is cleaned up there and its job queued again under the same task id.
- A started task is watched again: it keeps its slot, its deadline and any cancel in
  progress. One that ended while the server was down ends with the status it left;
  one that left none FAILS with its backend's words for why.
- A task on a resource the server no longer has FAILS saying so.

Slots are taken for every unfinished task before any READY job is queued, so a queued job
never starts in a slot a re-adopted task still holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from everest_app.descriptor import Application
from everest_app.states import ACTIVE_STATES, JobState, TaskState
from everest_local.executor import Executor, Running, Slot
from everest_local.outcome import task_stop
from everest_local.store import JobRow, TaskRow

log = logging.getLogger(__name__)


def recover(executor: Executor) -> None:
    """Reserve the slots of unfinished tasks, ask their backends about them (in the
    background: a remote resource may be slow to answer), and queue READY jobs."""
    store = executor.core.store
    for task in store.tasks_in_states((TaskState.STAGING, TaskState.RUNNING)):
        job = store.job(task.job_id)
        app = executor.core.catalog.apps.get(job.app_id) if job else None
        resource = executor.resources.get(task.resource or executor.local_id)
        if resource is None:
            store.update_task(task.id, state=TaskState.FAILED)
            if job is not None and job.state in ACTIVE_STATES:
                executor.end_without_task(job.id, JobState.FAILED, f"task {task.id} ran on "
                                          f"resource {task.resource}, which the server no "
                                          "longer has")
            continue
        slot = (resource.id, bool(app and app.is_service))
        executor.hold(slot, task.job_id, job.owner if job else "")
        executor.spawn_bg(_readopt(executor, task, job, app, slot))
    for job in store.jobs_in_states((JobState.READY,)):
        app = executor.core.catalog.apps.get(job.app_id)
        if app is None:
            executor.end_without_task(job.id, JobState.FAILED, f"application {job.app_alias} "
                                      "is no longer offered by this server")
            continue
        executor.enqueue(job.id, app, job)
    executor.pump()


async def _readopt(executor: Executor, task: TaskRow, job: JobRow | None,
                   app: Application | None, slot: Slot) -> None:
    """Watch one unfinished task again, or queue its job again if it never started."""
    store = executor.core.store
    resource = executor.resources.get(slot[0])
    assert resource is not None
    backend = executor.backend(resource)
    handle = backend.stored_handle(task)
    try:
        started = handle is not None and await backend.started(handle)
    except Exception as exc:
        log.warning("task %s: cannot ask %s about it (%s)", task.id, resource.name, exc)
        started = True  # do not start it twice: watch it (retrying) instead
    if not started:
        if handle is not None:
            await executor.remove_quietly(backend, handle)
        store.delete_task(task.id)  # it never ran: the attempt starts afresh
        executor.release(slot, task.job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return
        if app is None:
            executor.end_without_task(job.id, JobState.FAILED, f"application "
                                      f"{job.app_alias} is no longer offered by this server")
            return
        store.update_job(job.id, state=JobState.READY)
        store.add_event(job.id, f"Task {task.id} had not started on {resource.name} when "
                        "the server stopped; queued again")
        executor.enqueue(job.id, app)
        return
    assert handle is not None
    run = Running(task.id, task.job_id, job.app_id if job else "", slot, Path(task.dir),
                  backend, handle, deadline=task.deadline,
                  stop_reason=task_stop(task.stop_reason), stop_at=task.stop_at,
                  signals_sent=1 if task.stop_reason else 0)
    executor.running[task.id] = run
    store.update_task(task.id, state=TaskState.RUNNING, handle=json.dumps(handle))
    if job is not None and not job.state.is_terminal:
        store.add_event(job.id, f"Task {task.id} re-adopted after a server restart, on "
                        f"{resource.name} ({backend.describe(handle)})")
    log.info("re-adopting task %s on %s", task.id, resource.name)
    await executor.watch(run)
