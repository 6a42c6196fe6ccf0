"""Reconnect pacing shared by both tunnel implementations (:mod:`runner_tunnel`,
:mod:`runner_openssh`). Python >= 3.8, standard library only."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter between reconnect attempts.

    The first wait is about ``min_delay``; each further failure doubles it, up to
    ``max_delay``. A connection that stayed up longer than ``fresh_after`` seconds counts
    as a fresh failure and starts again from ``min_delay``. Jitter (half to all of the
    delay) keeps many runners cut off at once from reconnecting in step.
    """

    def __init__(self, min_delay: float, max_delay: float, fresh_after: float = 30.0):
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.fresh_after = fresh_after
        self._delay = min_delay

    def next_wait(self, up_for: float) -> float:
        """Seconds to wait after a connection that lasted ``up_for`` seconds dropped."""
        if up_for > self.fresh_after:
            self._delay = self.min_delay
        wait = self._delay * (0.5 + random.random() / 2)
        self._delay = min(self._delay * 2, self.max_delay)
        return wait
