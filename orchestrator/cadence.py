"""When the poller asks again: the pause rules for its two ways of asking.

**Few jobs in flight** (one GET per job): each job has its own schedule. The poller
remembers how long recent jobs of the same application took (from being watched to being
seen finished). A new job is first asked about after ``0.8 x`` the fastest of those
(immediately-ish, ``min_interval``, when none is known); after that the pause grows with the
time the job has run: by ``tight_growth`` (1.2: the answer is due) while it is within twice
the typical duration, by ``growth`` (1.5) beyond. A finished job is seen within about
20-50 % of its run time, or ``min_interval``; a long job costs a number of requests that
grows with the logarithm of its duration.

**Many in flight** (one list request per tick): one interval for all, aimed at a number of
jobs finishing per tick (``target_per_tick``, fewer when fewer are in flight) from a moving
estimate of the finishing rate, so each request pays for many results; it changes by at
most a factor of two per tick and stretches by ``growth`` while nothing finishes.

Errors back off: ``error_floor``, doubling per consecutive error, up to ``max_interval``.
"""

from __future__ import annotations

import statistics
from collections import deque


class Cadence:
    """The poller's pause rules. Not thread-safe: the poller thread owns it."""

    def __init__(self, min_interval: float = 0.01, max_interval: float = 2.0, *,
                 growth: float = 1.5, tight_growth: float = 1.2, target_per_tick: int = 16,
                 error_floor: float = 0.25, memory: int = 16):
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self.min = min_interval
        self.max = max_interval
        self.growth = growth
        self.tight_growth = tight_growth
        self.target = target_per_tick
        self.error_floor = error_floor
        self.interval = min_interval  # the list-mode interval
        self.rate = 0.0  # moving estimate of jobs finishing per second (list mode)
        self.errors = 0
        self._memory = memory
        self._durations: dict[str, deque[float]] = {}

    def _clamp(self, value: float) -> float:
        return min(self.max, max(self.min, value))

    # -- per-job schedule ------------------------------------------------------------------

    def record_duration(self, group: str, seconds: float) -> None:
        """Remember that a job of ``group`` (its application) took ``seconds``."""
        self._durations.setdefault(group, deque(maxlen=self._memory)).append(seconds)

    def first_poll(self, group: str) -> float:
        """Seconds from watching a new job of ``group`` to asking about it first."""
        recent = self._durations.get(group)
        return self._clamp(0.8 * min(recent)) if recent else self.min

    def next_poll(self, group: str, elapsed: float) -> float:
        """Seconds to the next question about a job of ``group`` running for ``elapsed``."""
        recent = self._durations.get(group)
        due = bool(recent) and elapsed <= 2 * statistics.median(recent)
        factor = (self.tight_growth if due else self.growth) - 1
        return self._clamp(elapsed * factor)

    # -- list mode ---------------------------------------------------------------------------

    def after_list_tick(self, *, finished: int, in_flight: int, elapsed: float) -> float:
        """Update from a list tick that saw ``finished`` jobs end; returns the next interval.

        ``in_flight`` counts jobs still watched after the tick, ``elapsed`` the time since
        the previous tick.
        """
        if elapsed > 0:
            self.rate = 0.5 * self.rate + 0.5 * (finished / elapsed)
        target = max(1, min(self.target, in_flight // 4))
        if self.rate > 0 and finished:
            wanted = target / self.rate
            wanted = min(self.interval * 2, max(self.interval / 2, wanted))
        else:
            wanted = self.interval * self.growth
        self.interval = self._clamp(wanted)
        return self.interval

    def start_listing(self) -> None:
        """Many jobs just became in flight: start the list interval low, let it grow."""
        self.interval = self.min
        self.rate = 0.0

    # -- errors ------------------------------------------------------------------------------

    def after_error(self) -> float:
        """A request failed: the pause before trying again (grows per consecutive error)."""
        self.errors += 1
        return min(self.max, self.error_floor * 2 ** (self.errors - 1))

    def after_success(self) -> None:
        """A tick worked: forget the error streak."""
        self.errors = 0
