"""The orchestrator with and without the server's API extensions (docs/api-extensions.md):
the request shapes on each path (``responses``: an Everest that has no extensions, and a
server that has them), then end to end against real local servers, one offering the
extensions and one run with ``--plain-api`` (answering as Everest does)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers

from everest_app.client import EverestClient
from everest_app.errors import BadRequestError
from orchestrator import Orchestrator
from orchestrator.extensions import CURSOR_HEADER, Extensions
from tests.fixtures.waiting import wait_for
from tests.harness.server import start_server
from tests.orchestrator.conftest import TEST_APPS

URL = "https://everest.test"
ID = "a" * 24


def _job(state: str, result: dict | None = None, job_id: str = ID) -> dict:
    return {"id": job_id, "name": "x", "state": state, "inputs": {"n": 7},
            "result": result}


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def _client() -> EverestClient:
    return EverestClient(URL, "t0ken", retries=0, backoff=0)


# -- request shapes ----------------------------------------------------------------------------


def test_against_everest_one_post_per_job_and_plain_polls(api):
    api.get(f"{URL}/api/extensions", status=404, json={"message": "no such endpoint"})
    api.post(f"{URL}/api/apps/echo", status=201, json=_job("READY"))
    api.get(f"{URL}/api/jobs/{ID}", json=_job("DONE", {"n": 7}))
    with Orchestrator(_client(), progress=False) as orch:
        assert orch.submit("echo", {"n": 7}).result(30) == {"n": 7}
    sent = [(c.request.method, urlsplit(c.request.url).path) for c in api.calls]
    assert sent[0] == ("GET", "/api/extensions")
    assert ("POST", "/api/apps/echo") in sent and ("POST", "/api/jobs") not in sent
    assert all("ended_after" not in c.request.url for c in api.calls)
    body = json.loads(next(c.request.body for c in api.calls if c.request.method == "POST"))
    assert body["inputs"] == {"n": 7} and body["name"].startswith("echo #")


def test_with_the_extensions_a_batch_post_and_a_waiting_listing(api):
    api.get(f"{URL}/api/extensions", json={
        "batch_submit": {"max_jobs": 50},
        "ended_wait": {"max_wait": 30, "cursor_header": CURSOR_HEADER}})
    api.get(f"{URL}/api/jobs", json=[], headers={CURSOR_HEADER: "1.5"},
            match=[matchers.query_param_matcher(
                {"ended_after": "now", "wait": "0.000"})])
    api.post(f"{URL}/api/jobs", status=201, json=[_job("READY")])
    api.get(f"{URL}/api/jobs", json=[_job("DONE", {"n": 7})], headers={CURSOR_HEADER: "2.5"},
            match=[matchers.query_param_matcher({"ended_after": "1.5"},
                                                          strict_match=False)])
    with Orchestrator(_client(), progress=False) as orch:
        assert orch.submit("echo", {"n": 7}).result(30) == {"n": 7}
        assert orch.stats["batches"] == 1 and orch.stats.get("poll_get", 0) == 0
    post = next(c.request for c in api.calls if c.request.method == "POST")
    assert urlsplit(post.url).path == "/api/jobs"
    [item] = json.loads(post.body)["jobs"]
    assert item["app"] == "echo" and item["inputs"] == {"n": 7} and "#" in item["name"]
    waits = [parse_qs(urlsplit(c.request.url).query) for c in api.calls
             if c.request.method == "GET" and "ended_after" in c.request.url]
    assert waits[0] == {"ended_after": ["now"], "wait": ["0.000"]}
    assert waits[1]["ended_after"] == ["1.5"] and 0 < float(waits[1]["wait"][0]) <= 30
    assert not any(urlsplit(c.request.url).path == f"/api/jobs/{ID}" for c in api.calls)


@pytest.mark.parametrize("answer", [
    {"status": 404, "json": {"message": "no"}},
    {"status": 200, "body": "not json"},
    {"status": 200, "json": ["a list"]},
    {"status": 200, "json": {"batch_submit": {"max_jobs": "many"}, "ended_wait": 3}},
])
def test_odd_or_missing_advertisements_mean_no_extensions(api, answer):
    api.get(f"{URL}/api/extensions", **answer)
    assert Extensions.of(_client()) == Extensions()


def test_a_refused_batch_is_sent_again_one_job_per_request(api):
    api.get(f"{URL}/api/extensions", json={"batch_submit": {"max_jobs": 50}})
    api.post(f"{URL}/api/jobs", status=400, json={"message": "jobs[0]: input 'n': bad"})
    api.post(f"{URL}/api/apps/echo", status=400, json={"message": "input 'n': bad"})
    with Orchestrator(_client(), progress=False) as orch:
        with pytest.raises(BadRequestError, match="input 'n': bad"):
            orch.submit("echo", {"n": "x"}).result(30)
        assert orch.stats["batch_fallbacks"] == 1
    assert [urlsplit(c.request.url).path for c in api.calls
            if c.request.method == "POST"] == ["/api/jobs", "/api/apps/echo"]


# -- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(real_components: None, tmp_path_factory):
    """A local server that answers as Everest does: no extensions."""
    srv = start_server(tmp_path_factory.mktemp("plain-server") / "data", apps=TEST_APPS,
                       slots=4, extra_args=["--plain-api"])
    try:
        yield srv
    finally:
        srv.close()


def test_a_bag_goes_in_batches_and_ends_are_learnt_by_waiting(server):
    with Orchestrator(server.client(), progress=False) as orch:
        assert orch.map("echo", ({"n": i} for i in range(300))) == [{"n": i}
                                                                     for i in range(300)]
        stats = orch.stats
    assert stats["submitted"] == 300 and 1 <= stats["batches"] < 300
    assert stats["poll_wait"] > 0 and stats.get("poll_list", 0) == 0
    assert stats.get("poll_get", 0) == 0 and stats.get("batch_fallbacks", 0) == 0


def test_a_chain_learns_each_end_by_waiting(server):
    with Orchestrator(server.client(), progress=False) as orch:
        prev = orch.submit("echo", {"n": 3})
        for _ in range(4):
            prev = orch.submit("echo", {"n": prev.output("n")})
        assert prev.result(60) == {"n": 3}
        assert orch.stats.get("poll_get", 0) == 0 and orch.stats["poll_wait"] >= 5


def test_a_bad_job_in_a_batch_fails_alone(server):
    with Orchestrator(server.client(), progress=False, max_in_flight=20) as orch:
        out = orch.map("echo", [{"n": 1}, {"n": "two"}, {"n": 3}] * 5,
                       return_exceptions=True)
    assert [r for i, r in enumerate(out) if i % 3 != 1] == [{"n": 1}, {"n": 3}] * 5
    assert all(isinstance(r, BadRequestError) and "'n'" in str(r) for r in out[1::3])


def test_the_same_bag_against_a_server_without_extensions(plain_server):
    with Orchestrator(plain_server.client(), progress=False) as orch:
        assert orch.map("echo", ({"n": i} for i in range(200))) == [{"n": i}
                                                                     for i in range(200)]
        stats = orch.stats
    assert stats["submitted"] == 200 and stats.get("batches", 0) == 0
    assert stats.get("poll_wait", 0) == 0 and stats["poll_list"] > 0
    requests_seen = plain_server.client().request("GET", "/_local/stats").json()["requests"]
    assert requests_seen["POST /api/apps/{app}"] == 200
    assert requests_seen.get("POST /api/jobs", 0) == 0


def test_extensions_can_be_declined(server):
    with Orchestrator(server.client(), progress=False, extensions=False) as orch:
        assert orch.map("echo", [{"n": i} for i in range(20)]) == [{"n": i} for i in range(20)]
        assert orch.stats.get("batches", 0) == 0 and orch.stats.get("poll_wait", 0) == 0


def test_another_users_waits_see_none_of_these_jobs(server):
    with Orchestrator(server.client("bob"), progress=False) as bobs:
        bob_job = bobs.submit("echo", {"n": 1})
        with Orchestrator(server.client("alice"), progress=False) as alices:
            assert alices.map("echo", [{"n": i} for i in range(30)]) == [
                {"n": i} for i in range(30)]
        assert bob_job.result(60) == {"n": 1}
        assert bobs.poller._early.keys().isdisjoint(  # noqa: SLF001 - what bob was shown
            {j.id for j in server.client("alice").jobs()})


def test_a_batch_whose_answer_was_lost_is_found_by_name_not_sent_again(api):
    api.get(f"{URL}/api/extensions", json={"batch_submit": {"max_jobs": 50}})
    sent: list[dict] = []

    def lost(request):  # the server made the job, the answer never came back
        sent.append(json.loads(request.body)["jobs"][0])
        raise requests.ConnectionError("connection reset")

    def listing(request):
        return 200, {}, json.dumps([{"id": ID, "name": sent[0]["name"], "state": "DONE",
                                     "inputs": {"n": 7}, "result": {"n": 7}}])

    api.add_callback(responses.POST, f"{URL}/api/jobs", callback=lost)
    api.add_callback(responses.GET, f"{URL}/api/jobs", callback=listing)
    api.get(f"{URL}/api/jobs/{ID}", json=_job("DONE", {"n": 7}))
    with Orchestrator(_client(), progress=False) as orch:
        assert orch.submit("echo", {"n": 7}).result(30) == {"n": 7}
        assert orch.stats["adopted"] == 1 and orch.stats.get("submitted", 0) == 0
    assert [c.request.method for c in api.calls].count("POST") == 1


def test_a_server_restarted_without_extensions_mid_run_loses_nothing(start_local_server):
    server = start_local_server(apps=TEST_APPS, slots=2)
    with Orchestrator(server.client(), progress=False, max_in_flight=10) as orch:
        futures = [orch.submit("sleep", {"duration": 0.2}, name=f"downgrade-{i}")
                   for i in range(30)]
        wait_for(lambda: sum(f.done() for f in futures) >= 4, timeout=120)
        server.kill9()
        server._options.append("--plain-api")  # noqa: SLF001 - now answers as Everest does
        server.restart()
        assert [f.result(240) for f in futures] == [{}] * 30
        assert orch.poller.extensions == Extensions()  # both noticed and dropped
    names = [j.name for j in server.client().jobs() if j.name.startswith("downgrade-")]
    assert sorted(n.split(" #")[0] for n in names) == sorted(f"downgrade-{i}" for i in range(30))
