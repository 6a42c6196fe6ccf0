"""The local server's extensions of Everest's API (docs/api-extensions.md), over HTTP against
real server processes: batch submission (``POST /api/jobs``, all or none) and the listing of
jobs ended since a cursor that waits for one to end (``GET /api/jobs?ended_after=&wait=``),
both advertised at ``GET /api/extensions`` and both absent with ``--plain-api``."""

from __future__ import annotations

import concurrent.futures
import io
import socket
import uuid

import pytest
import requests

from tests.fixtures.waiting import wait_for

CURSOR = "X-Everest-Cursor"


class Api:
    """Plain HTTP as one user (status codes and headers seen as sent)."""

    def __init__(self, server, user: str):
        self.url = server.url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {server.token_for(user)}"

    def get(self, path: str, **params) -> requests.Response:
        return self.http.get(self.url + path, params=params, timeout=60)

    def post(self, path: str, body) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=60)

    def ended(self, cursor: str, wait: float = 0) -> tuple[list[dict], str]:
        r = self.get("/api/jobs", ended_after=cursor, wait=wait)
        assert r.status_code == 200, r.text
        return r.json(), r.headers[CURSOR]

    def names(self) -> set[str]:
        return {job["name"] for job in self.get("/api/jobs").json()}


@pytest.fixture(scope="module")
def alice(local_server) -> Api:
    return Api(local_server, "alice")


@pytest.fixture(scope="module")
def bob(local_server) -> Api:
    return Api(local_server, "bob")


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _error(r: requests.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert words in r.json()["message"]


# -- advertised ------------------------------------------------------------------------------


def test_the_extensions_are_advertised(alice):
    r = alice.get("/api/extensions")
    assert r.status_code == 200
    ext = r.json()
    assert ext["batch_submit"]["max_jobs"] >= 100
    assert ext["ended_wait"]["max_wait"] > 0 and ext["ended_wait"]["cursor_header"] == CURSOR
    assert requests.get(alice.url + "/api/extensions", timeout=10).status_code == 401


# -- batch submission ------------------------------------------------------------------------


def test_a_batch_creates_every_job_in_order_and_they_run(alice):
    tag = _tag()
    r = alice.post("/api/jobs", {"jobs": [
        {"app": "hostname", "name": f"{tag}-0"},
        {"app": "sleep", "name": f"{tag}-1", "inputs": {"duration": 0}},
        {"app": "hostname", "name": f"{tag}-2", "inputs": {}}]})
    assert r.status_code == 201, r.text
    jobs = r.json()
    assert [j["name"] for j in jobs] == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
    assert [j["appAlias"] for j in jobs] == ["hostname", "sleep", "hostname"]
    for job in jobs:
        assert alice.get(f"/api/jobs/{job['id']}").json()["inputs"] == job["inputs"]
        done = wait_for(lambda j=job: (got := alice.get(f"/api/jobs/{j['id']}").json())
                        ["state"] in ("DONE", "FAILED") and got, timeout=60)
        assert done["state"] == "DONE", done


@pytest.mark.parametrize("bad, words", [
    ({"app": "no-such-app"}, "jobs[1]: no application"),
    ({"app": "sleep", "inputs": {"duration": "long"}}, "jobs[1]:"),
    ({"app": "sleep", "inputs": {}}, "jobs[1]:"),
    ({"inputs": {}}, "jobs[1]: each job is an object with 'app'"),
    ("hostname", "jobs[1]: each job is an object with 'app'"),
    ({"app": "hostname", "name": 5}, "jobs[1]: 'name' must be a string"),
])
def test_one_bad_item_refuses_the_batch_and_creates_nothing(alice, bad, words):
    tag = _tag()
    before = alice.names()
    r = alice.post("/api/jobs", {"jobs": [{"app": "hostname", "name": f"{tag}-ok"}, bad,
                                          {"app": "hostname", "name": f"{tag}-ok2"}]})
    _error(r, 400, words)
    assert alice.names() == before


def test_a_batch_naming_another_users_file_creates_nothing(alice, bob):
    uri = bob.http.post(bob.url + "/api/files/temp", files={
        "file": ("b.txt", io.BytesIO(b"bob's"))}, timeout=30).json()["uri"]
    before = alice.names()
    r = alice.post("/api/jobs", {"jobs": [
        {"app": "hostname", "name": _tag()},
        {"app": "append", "inputs": {"message": "m", "file": uri}}]})
    _error(r, 400, "jobs[1]: input 'file'")
    assert alice.names() == before


@pytest.mark.parametrize("body, words", [
    ({"jobs": []}, "at least one job"),
    ({}, "at least one job"),
    ([{"app": "hostname"}], "send {\"jobs\""),
    ({"jobs": [{"app": "hostname"}] * 1001}, "at most 1000 jobs"),
])
def test_malformed_batches_are_refused(alice, body, words):
    _error(alice.post("/api/jobs", body), 400, words)


def test_a_batch_needs_a_token(local_server):
    r = requests.post(local_server.url + "/api/jobs", json={"jobs": [{"app": "hostname"}]},
                      timeout=10)
    _error(r, 401, "token")


def test_a_batch_past_the_in_flight_limit_creates_nothing(start_local_server):
    server = start_local_server(extra_args=["--max-jobs-in-flight", "3"])
    api = Api(server, "alice")
    held = api.post("/api/jobs", {"jobs": [{"app": "sleep", "inputs": {"duration": 60}}] * 2})
    assert held.status_code == 201
    r = api.post("/api/jobs", {"jobs": [{"app": "hostname"}, {"app": "hostname"}]})
    _error(r, 429, "limit")
    assert "Retry-After" in r.headers
    assert len(api.get("/api/jobs").json()) == 2


# -- the jobs-ended listing, waiting ---------------------------------------------------------


def test_the_listing_waits_for_the_callers_job_to_end(alice):
    _, cursor = alice.ended("now")
    job = alice.post("/api/apps/sleep", {"inputs": {"duration": 0.3}, "name": _tag()}).json()
    ended, after = alice.ended(cursor, wait=30)
    assert [j["id"] for j in ended] == [job["id"]]
    assert ended[0]["state"] == "DONE"
    assert float(after) > float(cursor)
    # asked again from the new cursor: nothing more (the same end is not listed twice)
    assert alice.ended(after, wait=0.2)[0] == []
    # and from the old one, the job again: the cursor is the client's to keep
    assert [j["id"] for j in alice.ended(cursor)[0]] == [job["id"]]


def test_one_users_ending_job_never_reaches_anothers_listing(alice, bob):
    _, bob_cursor = bob.ended("now")
    _, alice_cursor = alice.ended("now")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        bobs = pool.submit(bob.ended, bob_cursor, 3)
        job = alice.post("/api/apps/hostname", {"name": _tag()}).json()
        ended, _ = alice.ended(alice_cursor, wait=30)
        assert job["id"] in [j["id"] for j in ended]
        listed, after = bobs.result(timeout=30)
    assert listed == [] and after == bob_cursor
    assert all(j["id"] != job["id"] for j in bob.ended(bob_cursor)[0])


def test_every_end_of_a_batch_is_listed_once(alice):
    _, cursor = alice.ended("now")
    jobs = alice.post("/api/jobs", {"jobs": [{"app": "hostname", "name": _tag()}
                                             for _ in range(5)]}).json()
    seen: list[str] = []
    for _ in range(20):  # each answer brings at least one end, or waits its 5 s out
        ended, cursor = alice.ended(cursor, 5)
        seen += [j["id"] for j in ended]
        if len(seen) >= 5:
            break
    assert sorted(seen) == sorted(j["id"] for j in jobs)
    assert alice.ended(cursor, 0.2)[0] == []


@pytest.mark.parametrize("params, words", [
    ({"ended_after": "now", "wait": "-1"}, "wait must be a number"),
    ({"ended_after": "now", "wait": "soon"}, "wait must be a number"),
    ({"ended_after": "now", "wait": "nan"}, "wait must be a number"),
    ({"ended_after": "yesterday"}, "ended_after must be a number"),
    ({"ended_after": "-3"}, "ended_after must be a number"),
])
def test_bad_listing_arguments_are_refused(alice, params, words):
    _error(alice.get("/api/jobs", **params), 400, words)


def test_the_listing_needs_a_token(local_server):
    r = requests.get(local_server.url + "/api/jobs",
                     params={"ended_after": "now", "wait": 1}, timeout=10)
    _error(r, 401, "token")


def test_waiting_listings_per_user_are_bounded(start_local_server):
    server = start_local_server()
    alice, bob = Api(server, "alice"), Api(server, "bob")
    _, cursor = alice.ended("now")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        waits = [pool.submit(Api(server, "alice").ended, cursor, 4) for _ in range(16)]
        wait_for(lambda: server_waiting(server) >= 16, timeout=20)
        _error(alice.get("/api/jobs", ended_after=cursor, wait=4), 429, "waiting job listings")
        assert bob.ended(cursor, 0.1)[0] == []  # another user is not held back
        assert all(w.result(timeout=30)[0] == [] for w in waits)
    assert alice.ended(cursor, 0.1)[0] == []  # the places are given back


def server_waiting(server) -> int:
    """Requests of the jobs listing the server has counted (the waiting ones included)."""
    return requests.get(server.url + "/_local/stats", timeout=5).json()["requests"].get(
        "GET /api/jobs", 0) - 1  # less the one that got the cursor


def test_a_restart_mid_wait_loses_no_end(start_local_server):
    server = start_local_server()
    api = Api(server, "alice")
    _, cursor = api.ended("now")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(api.ended, cursor, 30)
        wait_for(lambda: server_waiting(server) >= 1, timeout=20)
        server.kill9()
        with pytest.raises(requests.ConnectionError):
            waiting.result(timeout=30)
    server.restart()
    api = Api(server, "alice")
    job = api.post("/api/apps/hostname", {"name": _tag()}).json()
    ended, after = api.ended(cursor, wait=30)
    assert [j["id"] for j in ended] == [job["id"]] and float(after) > float(cursor)


# -- the plain API: what a real Everest answers ------------------------------------------------


def test_plain_api_offers_no_extension(start_local_server):
    server = start_local_server(extra_args=["--plain-api"])
    api = Api(server, "alice")
    _error(api.get("/api/extensions"), 404, "no such endpoint")
    _error(api.post("/api/jobs", {"jobs": [{"app": "hostname"}]}), 405, "not allowed")
    job = api.post("/api/apps/hostname", {}).json()
    r = api.get("/api/jobs", ended_after="now", wait=5)  # ignored, as Everest would
    assert r.status_code == 200 and CURSOR not in r.headers
    assert [j["id"] for j in r.json()] == [job["id"]]


def test_a_client_that_goes_away_mid_wait_gives_its_place_back(start_local_server):
    server = start_local_server()
    api = Api(server, "alice")
    _, cursor = api.ended("now")
    host, port = server.url.split("//")[1].split(":")
    request = (f"GET /api/jobs?ended_after={cursor}&wait=30 HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {server.token_for('alice')}\r\n\r\n").encode()
    for n in range(1, 18):  # one more than may wait at once, each abandoned
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            wait_for(lambda n=n: server_waiting(server) >= n, timeout=20)
    r = api.get("/api/jobs", ended_after=cursor, wait=0.2)  # long before the 30 s are up
    assert r.status_code == 200 and r.json() == []
