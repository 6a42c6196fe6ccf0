"""A relay session's life: its states, the one table of moves between them, and why runners stop.

Every place that changes a session's state (the store, the relay, the server plugin) asks
:func:`can_move` first, so the table below is the whole state machine; everything that reads a
state (the launch flow, the CLI) compares :class:`SessionState` members, never strings.

    waiting ──redeem──> starting ──tunnel up──> connected ──probe answered──> ready
       │                   │                      ▲    │                       │
       │                   │        tunnel up ────┘    └──── tunnel down ──────┤
       │                   │       (reconnect)        disconnected <───────────┘
       └──> expired        └──────────────> ended <── (from any live state)
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class SessionState(str, enum.Enum):
    """The states of a relay session, as stored and as the relay's API reports them."""

    WAITING = "waiting"            # ticket minted, not redeemed yet
    STARTING = "starting"          # ticket redeemed: the runner is starting JupyterLab
    CONNECTED = "connected"        # the runner's tunnel is up; the relay probes the notebook
    READY = "ready"                # the notebook answered through the tunnel
    DISCONNECTED = "disconnected"  # the tunnel dropped; the route is gone until it reconnects
    ENDED = "ended"                # stopped by its owner, or the runner went away for good
    EXPIRED = "expired"            # the ticket expired unredeemed

    @classmethod
    def parse(cls, value: str | SessionState) -> SessionState:
        """The state named ``value``; ``ValueError`` for a name the relay never uses."""
        return value if isinstance(value, SessionState) else cls(value)

    @classmethod
    def known(cls, value: object) -> SessionState | None:
        """The state named ``value`` as another relay reported it; None for a name this
        version does not know (a newer relay's), so clients never fail on one."""
        try:
            return cls(value)
        except ValueError:
            return None

    @property
    def live(self) -> bool:
        """True while the session holds a listener (it can still become ready)."""
        return self in LIVE_STATES

    def __str__(self) -> str:
        return self.value


S = SessionState

TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.WAITING: frozenset({S.STARTING, S.EXPIRED, S.ENDED}),
    S.STARTING: frozenset({S.CONNECTED, S.ENDED}),
    # a newer connection of the same runner replaces the older one: connected again
    S.CONNECTED: frozenset({S.CONNECTED, S.READY, S.DISCONNECTED, S.ENDED}),
    S.READY: frozenset({S.CONNECTED, S.DISCONNECTED, S.ENDED}),
    S.DISCONNECTED: frozenset({S.CONNECTED, S.ENDED}),
    S.ENDED: frozenset(),
    S.EXPIRED: frozenset(),
}
"""The only moves a session may make: ``TRANSITIONS[from]`` holds the states it may enter."""

LIVE_STATES: frozenset[SessionState] = frozenset(s for s, nxt in TRANSITIONS.items() if nxt)
"""States a session can still leave (it holds a listener); the others are final."""

FINAL_STATES: frozenset[SessionState] = frozenset(SessionState) - LIVE_STATES
"""States a session never leaves."""


def can_move(session_id: str, old: SessionState | str, new: SessionState) -> bool:
    """Whether the table allows ``old -> new``; a refused move is logged with its session."""
    old = SessionState.parse(old)
    if new in TRANSITIONS[old]:
        return True
    log.warning("session %s: refused the move %s -> %s", session_id, old.value, new.value)
    return False


class StopReason(str, enum.Enum):
    """Why a session runner stopped, as it tells the relay (``POST .../ended``, ``stop``).

    The runner owns this vocabulary (``agent_scripts/runner_stop.py``; the code shipped to
    resources imports none of our packages, so it cannot import this one). This is the relay's
    copy of the wire values: relay and runner are released apart, so a value the relay does
    not know — a newer runner's — parses as ``UNKNOWN`` instead of failing (a test checks the
    two copies agree).
    """

    INTERRUPTED = "interrupted"          # SIGINT/SIGTERM/CTRL_BREAK: the job was cancelled
    TIME_LIMIT = "time-limit"            # the session's time limit passed
    IDLE = "idle"                        # no activity for the idle timeout
    NOTEBOOK_EXITED = "notebook-exited"  # JupyterLab exited on its own
    RELAY_ENDED = "relay-ended"          # the relay refused the tunnel: the session ended
    ERROR = "error"                      # the runner failed
    BAD_INPUT = "bad-input"              # the runner's inputs were invalid
    UNKNOWN = "unknown"                  # not given (an older runner) or not known here

    @classmethod
    def parse(cls, value: str | None) -> StopReason:
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    def __str__(self) -> str:
        return self.value
