"""The local server's settings, shared by the command line, the factory and tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_slots() -> int:
    """Batch slots when none are given: one per CPU the process may use, at least 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 2
    return max(2, cpus)


@dataclass
class ServerSettings:
    """Everything a :class:`everest_local.app.LocalServer` needs to run.

    ``slots`` bounds concurrent batch tasks; applications marked as services (keyword
    ``service``: notebook sessions) run in their own pool of ``service_slots`` so they never
    starve short tasks. ``kill_grace`` is the wait between SIGINT, SIGTERM and SIGKILL when
    a task is cancelled. ``max_attempts`` bounds the tries of a task of an application with
    ``retryFailedTasks``. ``public_url`` is what tasks get as EVEREST_URL (default: the
    listening address). ``plugins`` are extra modules with a ``setup(server)`` hook.
    ``resources`` is the YAML file declaring where tasks may run (see
    :mod:`everest_local.resources`); without it every task runs here.
    ``login_attempts``/``login_backoff_max``: failed sign-ins allowed for one user from one
    address before each further attempt must wait (1 s, doubling, up to the maximum in
    seconds); see :class:`everest_local.auth.SignInThrottle`.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8800
    apps: list[Path] = field(default_factory=list)
    slots: int = field(default_factory=default_slots)
    service_slots: int = 32
    kill_grace: float = 5.0
    max_attempts: int = 3
    keep_work: bool = False
    max_body_size: int = 64 << 20  # JSON bodies, buffered in memory
    max_upload_size: int = 64 << 30  # file uploads, streamed to disk
    public_url: str | None = None
    plugins: list[str] = field(default_factory=list)
    resources: Path | None = None
    login_attempts: int = 5
    login_backoff_max: float = 900.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.apps = [Path(p).expanduser().resolve() for p in self.apps]
        if self.resources is not None:
            self.resources = Path(self.resources).expanduser().resolve()
        if self.slots < 1 or self.service_slots < 1:
            raise ValueError("slots and service slots must be at least 1")
        if self.login_attempts < 1 or self.login_backoff_max < 1:
            raise ValueError("login attempts and the login backoff must be at least 1")
        if self.kill_grace < 0 or self.max_attempts < 1:
            raise ValueError("kill grace must be >= 0 and max attempts >= 1")
