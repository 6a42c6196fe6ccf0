"""A relay restart while a kernel is idle: the next execution works (the runner's tunnel
and the lab's bridges reconnect by themselves); a relay that stays away: the kernel reads
as dead within the configured time and its job ends — no hang."""

from __future__ import annotations

import json
import time

import pytest

from tests.harness.relay import RelayProcess
from tests.kernels.conftest import running_jobs
from tests.kernels.lab import EVIDENCE
from tests.session.helpers import wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def relay(local_server, tmp_path):
    proc = RelayProcess(tmp_path / "relay-state", local_server.url).start()
    yield proc
    proc.stop()


def _lab(make_lab, local_server, relay, *install_args: str):
    lab = make_lab(local_server, EVEREST_RELAY_URL=relay.url)
    name = lab.install("--resource", "local", *install_args)
    lab.start()
    return lab, lab.start_kernel(name)


def test_the_next_execution_after_a_relay_restart_works(local_server, relay, make_lab):
    lab, kernel = _lab(make_lab, local_server, relay)
    job = json.loads(kernel.run(EVIDENCE))["job"]
    relay.stop()
    relay.start()
    assert kernel.run("print(6*7)", timeout=120) == "42\n", lab.log()
    assert running_jobs(local_server) == [job], (job, lab.log())
    kernel.shutdown()
    wait_for(lambda: job not in running_jobs(local_server), 60, "the kernel's job to end")


def test_a_relay_that_stays_away_ends_the_kernel_and_its_job(local_server, relay, make_lab):
    lab, kernel = _lab(make_lab, local_server, relay, "--unreachable-after", "5",
                       "--lease", "20")
    job = json.loads(kernel.run(EVIDENCE))["job"]
    relay.stop()
    kernel.send("print('never')")
    states = set()

    def kernel_given_up() -> bool:
        msg = kernel._next(time.monotonic() + 120)
        if msg["header"]["msg_type"] == "status":
            states.add(msg["content"]["execution_state"])
        return bool(states & {"restarting", "dead"})

    wait_for(kernel_given_up, 120, "the lab to tell the kernel is gone")
    wait_for(lambda: job not in running_jobs(local_server), 120, "the kernel's job to end")
    assert "has not answered" in lab.log()
