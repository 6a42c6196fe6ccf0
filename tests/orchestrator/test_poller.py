"""The poller's decisions, against a scripted stand-in for the client.

The stand-in answers ``job(id)`` and ``jobs()`` from a table the test changes, and can be
told to fail; everything the poller does with the answers is the real code. End-to-end
polling against the local server is in test_orchestrator.py.
"""

import threading
import time

import pytest

from everest_app.errors import EverestConnectionError, NotFoundError, ServerError
from everest_app.job import Job
from orchestrator.cadence import Cadence
from orchestrator.poller import Poller
from tests.fixtures.waiting import wait_for


class ScriptedClient:
    def __init__(self):
        self.states: dict[str, str] = {}
        self.calls: list[str] = []
        self.failures = 0
        self.failure = EverestConnectionError("down")
        self.lock = threading.Lock()

    def _maybe_fail(self):
        if self.failures:
            self.failures -= 1
            raise self.failure

    def job(self, job_id):
        with self.lock:
            self.calls.append("get")
            self._maybe_fail()
            if job_id not in self.states:
                raise NotFoundError(f"no job {job_id}")
            return Job.from_json({"id": job_id, "state": self.states[job_id],
                                  "result": {"id": job_id}})

    def jobs(self):
        return [Job.from_json(item) for item in self.listing()]

    def listing(self):
        with self.lock:
            self.calls.append("list")
            self._maybe_fail()
            return [{"id": i, "state": s} for i, s in self.states.items()]

    def request(self, method, path):
        assert (method, path) == ("GET", "/api/jobs")
        return Answer(self.listing())


class Answer:
    def __init__(self, body):
        self.body = body
        self.text = repr(body)

    def json(self):
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


@pytest.fixture
def client():
    return ScriptedClient()


@pytest.fixture
def poller(client):
    p = Poller(client, Cadence(0.005, 0.05), list_threshold=3, lost_after=3)
    yield p
    p.close()


def watch(poller, job_id):
    updates, lost = [], []
    poller.watch(job_id, updates.append, lambda i, e: lost.append((i, e)))
    return updates, lost


def test_each_new_state_once_and_the_terminal_one_last(client, poller):
    client.states["j1"] = "SUBMITTED"
    updates, _ = watch(poller, "j1")
    wait_for(lambda: len(updates) == 1)
    time.sleep(0.05)  # same state on later ticks: no repeat
    assert [str(u.state) for u in updates] == ["SUBMITTED"]
    client.states["j1"] = "DONE"
    wait_for(lambda: len(updates) == 2)
    assert updates[-1].result == {"id": "j1"}
    wait_for(lambda: len(poller) == 0)


def test_unknown_states_count_as_pending(client, poller):
    client.states["j1"] = "MIGRATING"  # a state this client does not know
    updates, _ = watch(poller, "j1")
    wait_for(lambda: updates)
    assert str(updates[0].state) == "UNKNOWN" and len(poller) == 1
    client.states["j1"] = "FAILED"
    wait_for(lambda: len(updates) == 2 and len(poller) == 0)


def test_few_jobs_are_asked_singly_many_with_one_list(client, poller):
    for i in range(3):
        client.states[f"a{i}"] = "RUNNING"
        watch(poller, f"a{i}")
    wait_for(lambda: client.calls.count("get") >= 6)
    assert "list" not in client.calls
    for i in range(10):
        client.states[f"b{i}"] = "RUNNING"
        watch(poller, f"b{i}")
    client.calls.clear()
    wait_for(lambda: client.calls.count("list") >= 3)
    assert "get" not in client.calls  # the list had every job


def test_a_job_missing_from_the_list_is_asked_for_singly(client, poller):
    for i in range(5):
        client.states[f"a{i}"] = "RUNNING"
        watch(poller, f"a{i}")
    updates, _ = watch(poller, "hidden")
    with client.lock:
        client.calls.clear()
    original = client.listing

    def listing_without_hidden():
        return [j for j in original() if j["id"] != "hidden"]

    client.listing = listing_without_hidden
    client.states["hidden"] = "DONE"
    wait_for(lambda: updates and updates[-1].is_done)
    assert "get" in client.calls


def test_http_errors_are_retried_and_never_reach_watchers(client, poller):
    client.states["j1"] = "RUNNING"
    client.failures = 4
    client.failure = ServerError("503 after retries")
    updates, lost = watch(poller, "j1")
    client.states["j1"] = "DONE"
    wait_for(lambda: updates and updates[-1].is_done)
    assert not lost and poller.requests["errors"] == 4


def test_a_list_answer_that_is_not_json_is_retried(client, poller):
    for i in range(5):
        client.states[f"a{i}"] = "DONE"
    original = client.request
    answers = [Answer(ValueError("garbage")), Answer({"not": "a list"})]

    def flaky_request(method, path):
        return answers.pop(0) if answers else original(method, path)

    client.request = flaky_request
    updates = [watch(poller, f"a{i}")[0] for i in range(5)]
    wait_for(lambda: all(u for u in updates))
    assert poller.requests["errors"] == 2


def test_a_job_that_keeps_answering_404_is_reported_lost(client, poller):
    updates, lost = watch(poller, "ghost")
    wait_for(lambda: lost)
    assert lost[0][0] == "ghost" and isinstance(lost[0][1], NotFoundError)
    assert not updates and len(poller) == 0


def test_a_failing_callback_does_not_stop_the_poller(client, poller):
    client.states.update({"bad": "DONE", "good": "DONE"})

    def explode(job):
        raise RuntimeError("user callback bug")

    poller.watch("bad", explode, lambda i, e: None)
    updates, _ = watch(poller, "good")
    wait_for(lambda: updates)


def test_close_stops_the_thread_and_refuses_new_watches(client):
    p = Poller(client, Cadence(0.005, 0.05))
    client.states["j"] = "RUNNING"
    watch(p, "j")
    wait_for(lambda: client.calls)
    p.close()
    n = len(client.calls)
    time.sleep(0.1)
    assert len(client.calls) == n
    with pytest.raises(RuntimeError):
        watch(p, "k")
