"""What the server offers beyond Everest's API, asked once (docs/api-extensions.md).

The local server advertises at ``GET /api/extensions`` a batch submission (``POST
/api/jobs``) and a job listing that waits for the caller's jobs to end (``GET
/api/jobs?ended_after=&wait=``). Everest answers that route 404; any failure to get a
well-formed answer means "none": the orchestrator then submits one job per request and
polls, which works against every server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CURSOR_HEADER = "X-Everest-Cursor"


@dataclass(frozen=True)
class Extensions:
    """The extensions a server offers: ``batch_max`` jobs per batch submission (0: none),
    ``max_wait`` seconds a waiting listing may hold (0: none)."""

    batch_max: int = 0
    max_wait: float = 0.0
    cursor_header: str = CURSOR_HEADER

    @classmethod
    def of(cls, client: Any) -> Extensions:
        """Ask ``client``'s server (one request); no extensions on any error or odd answer."""
        try:
            found = client.request("GET", "/api/extensions").json()
        except Exception as exc:  # Everest's 404, a stand-in client, a server down: none
            log.debug("no API extensions (%s): one request per job, polling", exc)
            return cls()
        if not isinstance(found, dict):
            return cls()
        batch, ended = found.get("batch_submit"), found.get("ended_wait")
        batch_max = batch.get("max_jobs") if isinstance(batch, dict) else 0
        max_wait = ended.get("max_wait") if isinstance(ended, dict) else 0
        header = ended.get("cursor_header") if isinstance(ended, dict) else None
        return cls(batch_max if isinstance(batch_max, int) and batch_max > 0 else 0,
                   float(max_wait) if isinstance(max_wait, int | float) and max_wait > 0
                   else 0.0,
                   header if isinstance(header, str) and header else CURSOR_HEADER)
