"""The reconnect loop and its pacing, shared by both tunnel implementations
(:mod:`runner_tunnel` with asyncssh, :mod:`runner_openssh` with OpenSSH's ``ssh``).
Python >= 3.8, standard library only."""

from __future__ import annotations

import asyncio
import logging
import random
import time

log = logging.getLogger("session_runner.tunnel")


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


class ReconnectingTunnel:
    """A tunnel that stays up: :meth:`run` makes one connection after another, waiting
    :class:`Backoff` between them, until :meth:`close`.

    Subclasses implement :meth:`_connect_once` (one connection, until it drops) and may
    refuse to go on in :meth:`_dropped`. ``connects``/``disconnects`` count what happened,
    for the summary; subclasses count ``connects`` when a connection is really up.
    """

    def __init__(self, min_delay: float, max_delay: float):
        self.backoff = Backoff(min_delay, max_delay)
        self.connects = 0
        self.disconnects = 0
        self._closing = False

    async def _connect_once(self) -> bool:
        """Connect and stay connected until the connection drops; return whether it failed
        for a network reason. Raise ``SessionEnded`` when the relay refuses the session."""
        raise NotImplementedError

    def _dropped(self, network: bool) -> None:
        """Called after each drop (not after :meth:`close`); raise to stop reconnecting."""

    async def run(self) -> None:
        """Stay connected until :meth:`close`; exceptions of the subclass's hooks end it."""
        while not self._closing:
            started = time.monotonic()
            network = await self._connect_once()
            if self._closing:
                break
            self._dropped(network)
            self.disconnects += 1
            wait = self.backoff.next_wait(time.monotonic() - started)
            log.info("tunnel down; reconnecting in %.1f s", wait)
            await asyncio.sleep(wait)

    async def close(self) -> None:
        """Stop reconnecting (subclasses also end the current connection)."""
        self._closing = True
