"""Fair share: which queued job takes the next free slot, so that no user's queue starves
another's.

Each executor queue (one resource's batch or service pool) keeps one first-in-first-out
queue per user. When a slot frees, the next job is the oldest of the user who, among those
with waiting work, has the fewest tasks holding slots of that kind now; on a tie, the one
served longest ago (a user never served first). So with one slot, alice's three queued jobs
and bob's one alternate alice, bob, alice, alice — bob does not wait behind all of alice's
— and with more slots users' running counts stay within one of each other while all have
work waiting. A user at the per-user cap (``max_running_per_user``) is passed over until
one of their tasks ends; their jobs keep their place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator


class FairQueue:
    """The queued jobs of one slot pool, per user (see the module docstring)."""

    def __init__(self) -> None:
        self._by_user: dict[str, deque[str]] = {}
        self._served: dict[str, int] = {}  # user -> when last served (a running count)
        self._turn = 0
        self._owner: dict[str, str] = {}  # job id -> user

    def append(self, job_id: str, owner: str) -> None:
        """Queue ``job_id`` of ``owner`` behind their other queued jobs."""
        self._by_user.setdefault(owner, deque()).append(job_id)
        self._owner[job_id] = owner

    def __len__(self) -> int:
        return len(self._owner)

    def __bool__(self) -> bool:
        return bool(self._owner)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._owner

    def __iter__(self) -> Iterator[str]:
        for jobs in self._by_user.values():
            yield from jobs

    def remove(self, job_id: str) -> None:
        """Take a queued job off the queue (cancel, delete); nothing if it is not queued."""
        owner = self._owner.pop(job_id, None)
        if owner is None:
            return
        jobs = self._by_user[owner]
        jobs.remove(job_id)
        if not jobs:
            del self._by_user[owner]

    def clear(self) -> None:
        self._by_user.clear()
        self._owner.clear()

    def take(self, running: Callable[[str], int], cap: int = 0) -> tuple[str, str] | None:
        """The next job to start and its owner, off the queue; None when every user with
        waiting work is at ``cap`` (0: no cap). ``running(user)``: the user's tasks holding
        slots of this kind now."""
        best: tuple[int, int] | None = None
        chosen = None
        for user in self._by_user:
            now = running(user)
            if cap and now >= cap:
                continue
            key = (now, self._served.get(user, -1))
            if best is None or key < best:
                best, chosen = key, user
        if chosen is None:
            return None
        jobs = self._by_user[chosen]
        job_id = jobs.popleft()
        if not jobs:
            del self._by_user[chosen]
        del self._owner[job_id]
        self._served[chosen] = self._turn
        self._turn += 1
        return job_id, chosen
