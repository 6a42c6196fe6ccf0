"""EverestSpawner in a real JupyterHub: a spawn through the hub's REST API streams its
stages in order, the server answers through the hub's proxy and the relay, a kernel runs
code, and stopping cancels the Everest job."""

from __future__ import annotations

import requests

from tests.hub.helpers import HubStack, hub_jobs, wait_job_state
from tests.session.helpers import run_in_kernel, wait_for


def test_spawn_progress_status_kernel_and_stop(stack: HubStack) -> None:
    api = stack.api
    resp = api.spawn("carol")
    assert resp.status_code == 202, resp.text
    events = list(api.progress("carol"))
    messages = [e["message"] for e in events]
    assert events[-1].get("ready"), (messages, stack.hub.log())
    # the event sent just before start() returns may be cut off by the hub's ready event
    # (JupyterHub stops the stream when the spawn ends): the stages before it are all there
    stages = ["Server requested", "Submitted to Everest as job", "Running on the resource",
              "Session runner connected to the relay", "Tunnel up"]
    seen = [next((i for i, m in enumerate(messages) if m.startswith(s)), None)
            for s in stages]
    assert None not in seen and seen == sorted(seen), messages
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)

    (job,) = hub_jobs(stack.everest, "carol")
    assert str(job.state) == "RUNNING"
    assert job.id in messages[1]
    assert set(job.inputs) >= {"relay", "ticket", "mode"} and job.inputs["mode"] == "hub"
    assert not any("JUPYTERHUB" in str(v) or "api_token" in str(v).lower()
                   for v in job.inputs.values())  # hub secrets never reach Everest

    auth = {"Authorization": f"token {stack.hub.driver_token}"}
    status = requests.get(api.proxied("/user/carol/api/status"), headers=auth, timeout=30)
    assert status.status_code == 200, status.text
    assert "last_activity" in status.json()
    assert run_in_kernel(api.proxied("/user/carol/"), stack.hub.driver_token,
                         "print(6*7)") == "42\n"

    api.stop("carol")
    wait_job_state(stack.everest, job.id, {"CANCELLED"})
    sessions = stack.relay_api()("GET", "/api/sessions").json()
    assert not [s for s in sessions if s["label"] == "testhub/carol/"]


def test_a_named_server_with_a_chosen_profile(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("carol", "gpu", profile="short").status_code == 202
    assert list(api.progress("carol", "gpu"))[-1].get("ready")
    (job,) = hub_jobs(stack.everest, "carol", "gpu")
    assert job.inputs["time_limit"] == 600  # the profile's
    auth = {"Authorization": f"token {stack.hub.driver_token}"}
    status = requests.get(api.proxied("/user/carol/gpu/api/status"), headers=auth, timeout=30)
    assert status.status_code == 200
    api.stop("carol", "gpu")
    wait_job_state(stack.everest, job.id, {"CANCELLED"})


def test_options_outside_the_profiles_are_refused(stack: HubStack) -> None:
    api = stack.api
    for options, said in (({"profile": "huge"}, "no profile 'huge' here"),
                          ({"profile": "hour", "resource": "any"}, "unknown options")):
        resp = api.spawn("oscar", **options)
        assert resp.status_code in (201, 202, 400), resp.text
        # refused before anything is asked of Everest: the spawn is over at once, and the
        # hub tells why (on the spawn page; its log has the same message)
        wait_for(lambda: api.server("oscar") is None, 30, "the failed spawn to clear")
        wait_for(lambda said=said: said in stack.hub.log(), 10, "the refusal in the log")
    assert not hub_jobs(stack.everest, "oscar")  # nothing was submitted


def test_a_job_cancelled_outside_the_hub_is_noticed(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("dave").status_code == 202
    assert list(api.progress("dave"))[-1].get("ready")
    (job,) = hub_jobs(stack.everest, "dave")
    stack.everest.cancel(job.id)
    wait_job_state(stack.everest, job.id, {"CANCELLED"})
    wait_for(lambda: api.server("dave") is None, 60, "the hub to notice", interval=0.25)
    # and the user can start again
    assert api.spawn("dave").status_code == 202
    assert list(api.progress("dave"))[-1].get("ready")
    api.stop("dave")
    assert not [j for j in hub_jobs(stack.everest, "dave") if not j.is_done]
