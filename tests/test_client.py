"""Exact request shapes of every client call and the mapping of every error (``responses``).

End-to-end behaviour against the real local server is tested in tests/server/.
"""

from __future__ import annotations

import io
import json

import pytest
import requests
import responses
from responses import matchers

from everest_app.client import EverestClient
from everest_app.errors import (
    AuthError,
    BadRequestError,
    EverestConnectionError,
    EverestError,
    JobTimeout,
    NotFoundError,
    ServerError,
)
from everest_app.states import JobState

URL = "https://everest.test"
TOKEN = "t0ken"
JOB = {"id": "a" * 24, "name": "j", "state": "RUNNING", "inputs": {}, "appId": "b" * 24,
       "appAlias": None, "appName": "sleep"}
BEARER = matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def client() -> EverestClient:
    with EverestClient(URL, TOKEN, retries=2, backoff=0) as c:
        yield c


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def test_login_posts_credentials_label_and_lifetime(api):
    api.post(f"{URL}/api/auth/access_token", json={"access_token": "new"},
             match=[matchers.json_params_matcher(
                 {"username": "u", "password": "p", "label": "lab", "lifetime": 3600})])
    assert EverestClient.login(URL, "u", "p", label="lab", lifetime=3600) == "new"


def test_login_falls_back_to_the_old_token_path(api):
    api.post(f"{URL}/api/auth/access_token", status=404)
    api.post(f"{URL}/auth/access_token", json={"access_token": "old"})
    assert EverestClient.login(URL, "u", "p") == "old"


def test_login_with_bad_password_is_an_auth_error_that_says_what_to_do(api):
    api.post(f"{URL}/api/auth/access_token", status=401, json={"message": "bad credentials"})
    with pytest.raises(AuthError, match="bad credentials.*everest-jupyter login"):
        EverestClient.login(URL, "u", "wrong")


def test_token_info_and_revoke_send_the_bearer_header(api, client):
    api.get(f"{URL}/api/auth/access_token", json={"label": "x"}, match=[BEARER])
    api.delete(f"{URL}/api/auth/access_token", match=[BEARER])
    assert client.token_info() == {"label": "x"}
    client.revoke_token()


def test_token_from_the_cookie_jar_is_used_when_none_is_given(api, monkeypatch):
    monkeypatch.setenv("EVEREST_URL", URL)
    c = EverestClient(token="")
    c.session.cookies.set("access_token", "from-cookie")
    api.get(f"{URL}/api/jobs", json=[],
            match=[matchers.header_matcher({"Cookie": "access_token=from-cookie"})])
    assert c.token == "from-cookie"
    assert c.jobs() == []


def test_url_and_token_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("EVEREST_URL", URL + "/")
    monkeypatch.setenv("EVEREST_TASK_TOKEN", "task")
    c = EverestClient()
    assert (c.url, c.token) == (URL, "task")
    assert c.session.headers["Authorization"] == "Bearer task"


def test_no_url_anywhere_is_a_clear_error(home):
    with pytest.raises(EverestError, match="No Everest server configured"):
        EverestClient()


def test_apps_search_and_get_by_id_and_owner_alias(api, client):
    api.get(f"{URL}/api/apps", json=[{"id": "1"}], match=[BEARER])
    api.get(f"{URL}/api/apps/search", json=[],
            match=[matchers.query_param_matcher({"name": "sle", "pagenum": "2", "sortBy": "jobs"})])
    api.get(f"{URL}/api/apps/{'c' * 24}", json={"id": "c" * 24})
    api.get(f"{URL}/api/apps/owner/my%20app", json={"alias": "my app"})
    assert client.apps() == [{"id": "1"}]
    assert client.search_apps("sle", page=2, sort_by="jobs") == []
    assert client.app("c" * 24)["id"] == "c" * 24
    assert client.app("owner/my app")["alias"] == "my app"


@pytest.mark.parametrize("status", [200, 201])
def test_submit_sends_name_inputs_resources_and_accepts_200_or_201(api, client, status):
    body = {"name": "run 1", "inputs": {"duration": 1}, "resources": ["r1"]}
    api.post(f"{URL}/api/apps/everest/sleep", json=dict(JOB, state="SUBMITTED"), status=status,
             match=[BEARER, matchers.json_params_matcher(body)])
    job = client.submit("everest/sleep", {"duration": 1}, name="run 1", resources=["r1"])
    assert job.id == JOB["id"] and job.state is JobState.SUBMITTED


def test_submit_names_the_job_when_no_name_is_given(api, client):
    api.post(f"{URL}/api/apps/sleep", json=JOB, status=201)
    client.submit("sleep", {})
    sent = json.loads(api.calls[0].request.body)
    assert sent["name"].startswith("sleep ") and "resources" not in sent


def test_submit_bad_inputs_carries_the_servers_message(api, client):
    api.post(f"{URL}/api/apps/sleep", status=400, json={"message": "input 'duration': required"})
    with pytest.raises(BadRequestError, match="input 'duration': required"):
        client.submit("sleep", {})


def test_job_calls(api, client):
    jid = JOB["id"]
    api.get(f"{URL}/api/jobs", json=[JOB, dict(JOB, id="d" * 24, state="WEIRD")])
    api.get(f"{URL}/api/jobs/{jid}", json=dict(JOB, state="DONE", result={"x": 1}))
    api.post(f"{URL}/api/jobs/{jid}/cancel", body="")
    api.delete(f"{URL}/api/jobs/{jid}")
    api.delete(f"{URL}/api/jobs", match=[matchers.query_param_matcher({"name": "batch 1"})])
    api.get(f"{URL}/api/jobs/{jid}/log", body="2026-01-01 00:00:00.000 Job submitted\n")
    jobs = client.jobs()
    assert [j.state for j in jobs] == [JobState.RUNNING, JobState.UNKNOWN]
    assert not jobs[1].is_done
    assert client.job(jid).output("x") == 1
    client.cancel(jid)
    client.delete_job(jid)
    client.delete_jobs("batch 1")
    assert client.log(jid).endswith("Job submitted\n")


def test_save_log_streams_to_a_file(api, client, tmp_path):
    api.get(f"{URL}/api/jobs/{JOB['id']}/log", body="line\n" * 1000)
    path = client.save_log(JOB["id"], tmp_path / "logs" / "job.log")
    assert path.read_text() == "line\n" * 1000


def test_wait_polls_until_terminal(api, client):
    url = f"{URL}/api/jobs/{JOB['id']}"
    for state in ("SUBMITTED", "SOMETHING_NEW", "RUNNING", "DONE"):
        api.get(url, json=dict(JOB, state=state))
    assert client.wait(JOB["id"], interval=0).state is JobState.DONE
    assert len(api.calls) == 4


def test_wait_times_out(api, client):
    api.get(f"{URL}/api/jobs/{JOB['id']}", json=JOB)
    with pytest.raises(JobTimeout, match="still RUNNING"):
        client.wait(JOB["id"], timeout=0.05, interval=0.01)


def test_upload_path_and_file_object_as_multipart_field_file(api, client, tmp_path):
    answer = {"uri": "/api/files/temp/x/data.txt", "filename": "data.txt", "length": 3}
    api.post(f"{URL}/api/files/temp", json=answer, match=[BEARER])
    api.post(f"{URL}/api/files/temp", json=answer)
    src = tmp_path / "data.txt"
    src.write_bytes(b"abc")
    assert client.upload(src) == answer
    client.upload(io.BytesIO(b"xyz"), filename="named.bin")
    first, second = (call.request for call in api.calls)
    assert b'name="file"; filename="data.txt"' in first.body and b"abc" in first.body
    assert b'filename="named.bin"' in second.body and b"xyz" in second.body


def test_download_read_and_delete_files(api, client, tmp_path):
    uri = "/api/files/jobs/j1/out.txt"
    api.get(URL + uri, body=b"payload")
    api.get(URL + uri, body=b"payload")
    api.delete(URL + uri)
    api.delete(f"{URL}/api/user/tmp_files")
    assert client.download(uri, tmp_path / "out.txt").read_bytes() == b"payload"
    assert client.read(uri) == b"payload"
    client.delete_file(uri)
    client.delete_temp_files()
    assert not list(tmp_path.glob(".*.part"))


def test_a_foreign_absolute_uri_never_gets_the_token(api, client, tmp_path):
    api.get("https://elsewhere.test/f.txt", body=b"x")
    client.download("https://elsewhere.test/f.txt", tmp_path / "f.txt")
    assert "Authorization" not in api.calls[0].request.headers


@pytest.mark.parametrize(("status", "error", "text"), [
    (401, AuthError, "everest-jupyter login"),
    (403, AuthError, "Not allowed"),
    (404, NotFoundError, "Not found: GET /api/jobs/x"),
    (409, BadRequestError, "conflict"),
    (500, ServerError, "try again later"),
])
def test_error_mapping(api, client, status, error, text):
    api.get(f"{URL}/api/jobs/x", status=status, json={"message": "conflict"})
    with pytest.raises(error, match=text) as info:
        client.job("x")
    assert info.value.status == status


def test_non_json_error_body_is_quoted(api, client):
    api.get(f"{URL}/api/jobs/x", status=400, body="plain words")
    with pytest.raises(BadRequestError, match="plain words"):
        client.job("x")


def test_idempotent_calls_are_retried_on_503_then_succeed(api, client):
    url = f"{URL}/api/jobs/{JOB['id']}"
    api.get(url, status=503)
    api.get(url, status=429, headers={"Retry-After": "0"})
    api.get(url, json=JOB)
    assert client.job(JOB["id"]).state is JobState.RUNNING
    assert len(api.calls) == 3


def test_retries_are_bounded(api, client):
    api.get(f"{URL}/api/jobs", status=502)
    with pytest.raises(ServerError):
        client.jobs()
    assert len(api.calls) == 3  # the first try and two retries


def test_a_submission_is_not_resent_after_a_502(api, client):
    api.post(f"{URL}/api/apps/sleep", status=502)
    with pytest.raises(ServerError):
        client.submit("sleep", {"duration": 1})
    assert len(api.calls) == 1


def test_a_submission_is_resent_after_429(api, client):
    api.post(f"{URL}/api/apps/sleep", status=429, headers={"Retry-After": "0"})
    api.post(f"{URL}/api/apps/sleep", status=201, json=JOB)
    assert client.submit("sleep", {}).id == JOB["id"]
    assert len(api.calls) == 2


def test_connection_refused_is_a_clear_connection_error():
    # nothing listens on port 9 of loopback (discard service is never enabled here)
    with EverestClient("http://127.0.0.1:9", "t", retries=1, backoff=0) as c:
        with pytest.raises(EverestConnectionError, match="Cannot reach Everest at"):
            c.jobs()


def test_timeouts_are_sent(api, client, monkeypatch):
    api.get(f"{URL}/api/jobs", json=[])
    seen = {}
    original = requests.Session.request

    def spy(self, method, url, **kw):
        seen.update(kw)
        return original(self, method, url, **kw)

    monkeypatch.setattr(requests.Session, "request", spy)
    client.jobs()
    assert seen["timeout"] == (5, 60)
