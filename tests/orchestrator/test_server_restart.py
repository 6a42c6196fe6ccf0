"""A server killed and restarted in the middle of a run: no job lost, none duplicated."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter

import pytest

from everest_app.states import JobState
from orchestrator import Orchestrator
from tests.fixtures.waiting import wait_for


@pytest.mark.parametrize("api", ["extensions", "plain"])
def test_kill9_and_restart_mid_run_loses_and_duplicates_nothing(start_local_server, api):
    # with the extensions the kill lands in a batch submission or a waiting listing; plain
    # (as against Everest), in single submissions and polls
    server = start_local_server(slots=2, extra_args=["--plain-api"] if api == "plain" else [])
    with Orchestrator(server.client(), max_in_flight=8, progress=False) as orch:
        futures = [orch.submit("sleep", {"duration": 0.3}, name=f"restart-{i}")
                   for i in range(40)]
        wait_for(lambda: sum(f.done() for f in futures) >= 6, timeout=120)
        server.kill9()
        assert sum(f.done() for f in futures) < 40  # killed in the middle of the run
        time.sleep(1.0)  # down for a while: polls and submissions fail meanwhile
        server.restart()
        done, pending = concurrent.futures.wait(futures, timeout=240)
        assert not pending
        assert [f.result() for f in futures] == [{}] * 40

    jobs = [j for j in server.client().jobs() if j.name.startswith("restart-")]
    names = Counter(j.name.split(" #")[0] for j in jobs)
    assert names == Counter({f"restart-{i}": 1 for i in range(40)})
    assert all(j.state == JobState.DONE for j in jobs)
    assert sorted(f.job_id for f in futures) == sorted(j.id for j in jobs)
