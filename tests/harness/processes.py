"""What every harness process shares: the checkout, the environment a child process of ours
gets, the CLI as a command, and a free port for the programs that cannot bind port 0 and say
which port they got (JupyterHub, its proxy, sshd, Slurm): ours always bind 0 themselves."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import requests
import requests.adapters

REPO = Path(__file__).resolve().parents[2]

current_test: Any = None
"""The pytest item being set up or run (set by ``tests/conftest.py``); None outside pytest."""


def starting(what: str) -> None:
    """Called by every harness starter: a test that starts ``what`` must be marked e2e, which
    it is when it requests the ``real_components`` fixture (see ``tests/conftest.py``)."""
    if current_test is not None and current_test.get_closest_marker("e2e") is None:
        raise RuntimeError(f"{current_test.nodeid} starts {what} without requesting the "
                           "real_components fixture: add it to the test or its fixture, so "
                           "the test is marked e2e")


def free_port() -> int:
    """A port free now on 127.0.0.1 — for another program to bind soon (it may be taken by
    then: use only for programs that cannot bind 0 and report)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_command() -> list[str]:
    """``everest-jupyter`` as this checkout's module."""
    return [sys.executable, "-m", "launcher.cli"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVEREST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                        if p)
    env.update(extra)
    return env


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_from(address: str) -> requests.Session:
    """An HTTP client whose connections come from ``address`` (a 127.0.0.x): how tests play
    several machines, since the servers trust the connection's peer, not X-Forwarded-For."""
    session = requests.Session()
    session.mount("http://", _FromAddress(address))
    return session
