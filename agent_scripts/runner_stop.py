"""Why a session runner stops. Python >= 3.8, standard library only.

The runner owns this vocabulary: it writes it to ``summary.json`` (``stop``, with the
human-readable ``reason`` beside it) and tells the relay (``POST .../ended``). The relay keeps
a copy of the wire values (``launcher.relay.state.StopReason``), because this folder is
shipped to resources and imports none of the everest-jupyter packages; a test checks the two
copies agree.
"""

from __future__ import annotations

import enum


class StopReason(str, enum.Enum):
    """Why the session ended; the value is what goes on the wire and into the summary."""

    INTERRUPTED = "interrupted"          # SIGINT/SIGTERM/CTRL_BREAK: the job was cancelled
    TIME_LIMIT = "time-limit"            # the session's time limit passed
    IDLE = "idle"                        # no activity for the idle timeout
    NOTEBOOK_EXITED = "notebook-exited"  # JupyterLab exited on its own
    RELAY_ENDED = "relay-ended"          # the relay refused the tunnel: the session ended
    ERROR = "error"                      # the runner failed
    BAD_INPUT = "bad-input"              # the runner's inputs were invalid

    @property
    def failed(self) -> bool:
        """True when the session ended because something went wrong (exit code 1 or 2)."""
        return self in (StopReason.NOTEBOOK_EXITED, StopReason.ERROR, StopReason.BAD_INPUT)
