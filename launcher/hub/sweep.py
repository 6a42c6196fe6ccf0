"""The hub's sweep for orphaned jobs: a hub that died while a start was pending, or whose
spawner state was lost, leaves a job running that no server owns. Every ``interval`` s the
sweep lists the jobs of this hub (by their name prefix, from the shared status caches) and
cancels the live ones no spawner owns once they have been seen unowned twice in a row."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from everest_app.states import JobState
from launcher.hub.api import ApiError, JsonApi, path_part
from launcher.hub.jobs import all_caches

log = logging.getLogger(__name__)

Owners = tuple[set[str], set[str]]
"""(job ids some spawner owns, job names of starts in flight)."""


async def cancel_job(everest: JsonApi, job_id: str) -> None:
    try:
        await everest.call("POST", f"/api/jobs/{path_part(job_id)}/cancel")
    except ApiError as exc:
        if exc.status not in (404, 409):  # gone or already ended: nothing to cancel
            log.warning("cancelling Everest job %s: %s", job_id, exc)


async def sweep(interval: float, prefix: str, owners: Callable[[], Owners]) -> None:
    """Every ``interval`` s, cancel this hub's live jobs that no spawner owns, once they
    have been seen unowned twice in a row."""
    suspects: set[str] = set()
    while True:
        await asyncio.sleep(interval)
        suspects = await sweep_once(prefix, suspects, interval / 2, owners())


async def sweep_once(prefix: str, suspects: set[str], max_age: float, owners: Owners
                     ) -> set[str]:
    """One round of the sweep: cancel the live jobs of this hub that no spawner owns and
    that are in ``suspects`` (unowned last round too); returns this round's unowned jobs.
    ``prefix`` names this hub's jobs; ``owners`` is what its spawners hold now.

    A job named for a server whose start is in flight is not unowned: the start owns it
    once Everest's answer to the submission arrives, however long that takes on a busy hub
    (a job whose start ended without owning it is swept in later rounds)."""
    owned, starting = owners
    unowned: set[str] = set()
    for cache in all_caches():
        try:
            snapshot = await cache.fresh(max_age)
        except ApiError:
            continue
        for jid, job in snapshot.jobs.items():
            name = str(job.get("name", ""))
            if name.startswith(prefix) and jid not in owned and name not in starting and \
                    not JobState.parse(job.get("state")).is_terminal:
                unowned.add(jid)
                if jid in suspects:
                    log.warning("sweep: cancelling job %s (%s): no server owns it", jid, name)
                    await cancel_job(cache.everest, jid)
                    cache.forget()
    return unowned
