"""How long the poller waits between ticks.

Two regimes, matching the poller's two ways of asking:

- **Few jobs in flight** (one GET per job per tick): a new job resets the interval to the
  minimum, and every tick that sees nothing finish stretches it by ``growth``; so a short job
  is seen finishing within about ``growth - 1`` of its own run time, and a long one costs a
  number of requests that grows with the logarithm of its duration.
- **Many in flight** (one list request per tick): the interval aims at a number of jobs
  finishing per tick (``target_per_tick``, less when fewer are in flight), using a moving
  estimate of the finishing rate; each request then pays for many results. It never changes
  by more than a factor of two per tick, and stretches by ``growth`` while nothing finishes.

Errors back the interval off (doubling, at least ``error_floor``), up to the maximum.
"""

from __future__ import annotations


class Cadence:
    """The poller's interval controller. Not thread-safe: the poller thread owns it."""

    def __init__(self, min_interval: float = 0.01, max_interval: float = 2.0, *,
                 growth: float = 1.5, target_per_tick: int = 16, error_floor: float = 0.25):
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self.min = min_interval
        self.max = max_interval
        self.growth = growth
        self.target = target_per_tick
        self.error_floor = error_floor
        self.interval = min_interval
        self.rate = 0.0  # moving estimate of jobs finishing per second

    def _clamp(self, value: float) -> float:
        return min(self.max, max(self.min, value))

    def on_new_jobs(self) -> None:
        """Jobs were added while few are in flight: look again soon."""
        self.interval = self.min

    def after_tick(self, *, finished: int, in_flight: int, elapsed: float,
                   listing: bool) -> float:
        """Update from one tick that saw ``finished`` jobs end; returns the next interval.

        ``in_flight`` counts jobs still watched after the tick, ``elapsed`` is the time
        since the previous tick, ``listing`` whether this tick used the list request.
        """
        if elapsed > 0:
            self.rate = 0.5 * self.rate + 0.5 * (finished / elapsed)
        if not listing:
            if finished:
                self.interval = self._clamp(self.interval / 2)
            else:
                self.interval = self._clamp(self.interval * self.growth)
            return self.interval
        target = max(1, min(self.target, in_flight // 4))
        if self.rate > 0 and finished:
            wanted = target / self.rate
            wanted = min(self.interval * 2, max(self.interval / 2, wanted))
        else:
            wanted = self.interval * self.growth
        self.interval = self._clamp(wanted)
        return self.interval

    def after_error(self) -> float:
        """The tick failed: back off. Returns the next interval."""
        self.interval = min(self.max, max(self.error_floor, self.interval * 2))
        return self.interval
