"""One local server for the orchestrator tests, with this folder's test applications."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from tests.harness.server import start_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEST_APPS = [HERE / "apps" / "flaky-once", HERE / "apps" / "echo"]
sys.path.insert(0, str(REPO / "examples"))  # the example modules (actor samples, data)


@pytest.fixture(scope="module")
def server(real_components: None, tmp_path_factory):
    """A real local server process shared by one test module (4 slots)."""
    srv = start_server(tmp_path_factory.mktemp("orchestrator-server") / "data",
                       apps=TEST_APPS, slots=4)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def orch(server):
    """An orchestrator on ``server``; cancels what a test leaves running."""
    o = Orchestrator(server.client(), progress=False)
    try:
        yield o
    finally:
        o.close(cancel_jobs=True)
