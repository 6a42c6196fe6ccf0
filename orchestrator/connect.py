"""``orchestrator.connect()``: an orchestrator for the Everest this process should use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from everest_app.client import EverestClient
from orchestrator.engine import DEFAULT_MAX_IN_FLIGHT, Orchestrator


def connect(url: str | None = None, token: str | None = None, *,
            journal: str | Path | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
            **options: Any) -> Orchestrator:
    """Open an :class:`Orchestrator` on an Everest server.

    Without arguments it uses ``EVEREST_URL`` with ``EVEREST_TOKEN`` or
    ``EVEREST_TASK_TOKEN`` (what a session job finds in its environment), else the user's
    configured profile. ``journal`` is a file recording submissions, so that running the
    same program again (a restarted kernel) re-attaches to its jobs. ``options`` are the
    other keyword arguments of :class:`Orchestrator`.

    Raises :class:`everest_app.errors.EverestError` when no server is configured.
    """
    submit_threads = options.get("submit_threads", 4)
    client = EverestClient(url, token, pool_size=max(32, submit_threads + 8))
    return Orchestrator(client, journal=journal, max_in_flight=max_in_flight,
                        own_client=True, **options)
