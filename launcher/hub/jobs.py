"""One view of Everest's jobs for a whole hub: the shared status cache.

Every spawner of a hub asks this cache, never Everest, for its job's state. The cache lists
the jobs of an Everest account (``GET /api/jobs``) at most once per ``max_age`` seconds,
however many spawners poll, stream progress or sweep — one request per interval for the
whole hub with a service token, one per signed-in account otherwise (Everest shows each
account only its own jobs). Concurrent askers share one request in flight.

Caches live for the process, keyed by Everest address and (a hash of) the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from everest_app.states import JobState
from launcher.hub.api import ApiError, JsonApi


@dataclass
class Snapshot:
    """The jobs as Everest listed them at ``taken`` (monotonic seconds), by id."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    taken: float = float("-inf")

    def state(self, job_id: str) -> JobState | None:
        """The job's state, or None when the listing does not hold it."""
        job = self.jobs.get(job_id)
        return JobState.parse(job.get("state")) if job else None


class JobCache:
    """The jobs of one Everest account, refreshed on demand (see the module docstring).

    ``last_error`` holds the last failure (None after a success) and ``last_ok`` when the
    last listing succeeded; callers decide how long to trust an old snapshot.
    """

    def __init__(self, everest: JsonApi):
        self.everest = everest
        self.snapshot = Snapshot()
        self.last_ok = float("-inf")
        self.last_error: ApiError | None = None
        self._inflight: asyncio.Future | None = None

    async def fresh(self, max_age: float) -> Snapshot:
        """A snapshot at most ``max_age`` seconds old (listing again if needed). Raises
        :class:`ApiError` when Everest cannot be asked; the old snapshot stays."""
        if time.monotonic() - self.snapshot.taken <= max_age:
            return self.snapshot
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._list())
        inflight = self._inflight
        try:
            return await asyncio.shield(inflight)
        finally:
            if self._inflight is inflight and inflight.done():
                self._inflight = None

    async def _list(self) -> Snapshot:
        started = time.monotonic()
        try:
            listed = await self.everest.call("GET", "/api/jobs")
        except ApiError as exc:
            self.last_error = exc
            raise
        finally:
            self._inflight = None
        jobs = {str(j["id"]): j for j in listed or [] if isinstance(j, dict) and "id" in j}
        self.snapshot = Snapshot(jobs, started)
        self.last_ok = started
        self.last_error = None
        return self.snapshot

    def forget(self) -> None:
        """Make the next :meth:`fresh` list again (after a submission or a cancel)."""
        self.snapshot = Snapshot(self.snapshot.jobs, float("-inf"))


_CACHES: dict[tuple[str, str], JobCache] = {}


def cache_for(everest_url: str, token: str, timeout: float = 10.0) -> JobCache:
    """The process-wide cache of this Everest account."""
    key = (everest_url.rstrip("/"), hashlib.sha256(token.encode()).hexdigest())
    cache = _CACHES.get(key)
    if cache is None:
        cache = _CACHES[key] = JobCache(JsonApi(everest_url, token, timeout=timeout))
    return cache


def all_caches() -> list[JobCache]:
    """Every account this process has asked about (for the orphan sweep)."""
    return list(_CACHES.values())
