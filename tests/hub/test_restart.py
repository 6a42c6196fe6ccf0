"""EverestSpawner across hub restarts and crashes, on a local server that runs one session
at a time (so a second server waits in Everest's queue, pending): the running server
survives a SIGTERM restart and a SIGKILL; a server pending at either is cancelled, never
orphaned; stopping a pending server cancels its job; the sweep cancels a job of this hub
that no server owns."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import requests

from everest_app.states import QUEUED_STATES
from tests.hub.helpers import HubStack, hub_jobs, wait_job_state
from tests.session.helpers import wait_for

USERS = ("erin", "frank", "gina")  # the users of this module's tests


@pytest.fixture(scope="module")
def stack(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    stack = HubStack(tmp_path_factory.mktemp("hub-restart"), service_slots=1,
                     sweep_interval=2)
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def _slot_freed(stack: HubStack) -> Iterator[None]:
    """After each test, the hub up, no server and no live job: a test that failed half-way
    must not leave the one session slot taken (the next test's server would wait for it in
    Everest's queue until it timed out)."""
    yield
    if stack.hub.proc is None or stack.hub.proc.poll() is not None:
        stack.hub.start()
    for user in USERS:
        if stack.api.server(user) is not None:
            stack.api.stop(user)
    for job in stack.live_jobs():
        stack.everest.cancel(job.id)
    wait_for(lambda: not stack.live_jobs(), 60, "every job of the hub to end")


def _answers(stack: HubStack, user: str) -> bool:
    resp = requests.get(stack.api.proxied(f"/user/{user}/api/status"), timeout=30,
                        headers={"Authorization": f"token {stack.hub.driver_token}"})
    return resp.status_code == 200


def _pending(stack: HubStack, user: str):
    """Spawn ``user``'s server and return its job once Everest holds it queued."""
    assert stack.api.spawn(user).status_code == 202
    jobs = wait_for(lambda: [j for j in hub_jobs(stack.everest, user) if not j.is_done], 60,
                    f"{user}'s job")
    assert str(jobs[0].state) in {str(s) for s in QUEUED_STATES}  # the one session slot is taken
    return jobs[0]


def _no_orphans(stack: HubStack, owned: set[str]) -> None:
    """Every live job of the service account belongs to a server the hub knows."""
    wait_for(lambda: {j.id for j in stack.live_jobs()} <= owned, 60,
             "jobs without a server to be cancelled", interval=0.25)


def test_restarts_keep_running_servers_and_cancel_pending_ones(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("erin").status_code == 202
    assert list(api.progress("erin"))[-1].get("ready")
    (running,) = hub_jobs(stack.everest, "erin")
    assert _answers(stack, "erin")

    for how in (signal.SIGTERM, signal.SIGKILL):
        queued = _pending(stack, "frank")
        if how == signal.SIGTERM:
            stack.hub.stop(signal.SIGTERM)
        else:
            stack.hub.kill9()
        stack.hub.start()
        wait_job_state(stack.everest, queued.id, {"CANCELLED"})
        wait_for(lambda: api.server("frank") is None, 60, "frank's server to be gone")
        if how == signal.SIGKILL:
            # found by its name: the hub had saved no state for a start still pending (a
            # SIGTERM'd hub may cancel the pending start itself on its way out)
            assert f"cancelling job {queued.id}, left from an earlier start" in \
                stack.hub.log_path.read_text(), stack.hub.log()
        assert api.wait_ready("erin") and _answers(stack, "erin"), stack.hub.log()
        # the URL the spawner gives after a restart is the one the hub stored
        assert "had invalid url" not in stack.hub.log_path.read_text(), stack.hub.log()
        assert str(stack.everest.job(running.id).state) == "RUNNING"
        _no_orphans(stack, {running.id})

    # stopping a pending server cancels its job
    queued = _pending(stack, "frank")
    api.stop("frank")
    wait_job_state(stack.everest, queued.id, {"CANCELLED"})

    api.stop("erin")
    wait_job_state(stack.everest, running.id, {"CANCELLED"})
    _no_orphans(stack, set())


def test_the_sweep_cancels_a_job_no_server_owns(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("gina").status_code == 202  # takes the slot: the ghost stays queued
    assert list(api.progress("gina"))[-1].get("ready")
    ghost = stack.everest.submit("jupyter-session", {
        "relay": stack.relay.url, "ticket": "0" * 40, "mode": "hub"},
        name="jupyterhub:testhub/ghost/")
    wait_job_state(stack.everest, ghost.id, {"CANCELLED"})
    (owned,) = [j for j in hub_jobs(stack.everest, "gina") if not j.is_done]
    assert str(stack.everest.job(owned.id).state) == "RUNNING"  # the sweep spares it
    api.stop("gina")
    _no_orphans(stack, set())
