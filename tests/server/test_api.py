"""The REST API of the local server, driven over HTTP against the real process."""

from __future__ import annotations

import http.client
import re
import secrets
import time
import uuid
from pathlib import Path

import pytest
import requests

from everest_app.client import EverestClient
from everest_app.errors import AuthError, BadRequestError, NotFoundError
from everest_app.states import JobState
from tests.harness.server import wait_for_state

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S.*$")


def _raw(server, method: str, path: str, headers: dict | None = None,
         body: bytes | None = None) -> tuple[int, dict, bytes]:
    """A request with the path sent exactly as given (no client-side normalising)."""
    host, port = server.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def alice(local_server) -> EverestClient:
    return local_server.client("alice")


@pytest.fixture(scope="module")
def bob(local_server) -> EverestClient:
    return local_server.client("bob")


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/auth/access_token", "/auth/access_token"])
def test_login_on_both_paths_sets_httponly_samesite_cookie(local_server, path):
    r = requests.post(local_server.url + path, json={
        "username": "alice", "password": local_server.password_for("alice"), "label": "t",
        "lifetime": 3600})
    assert r.status_code == 200
    token = r.json()["access_token"]
    cookie = r.headers["Set-Cookie"]
    assert f"access_token={token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    info = EverestClient(local_server.url, token).token_info()
    assert info["username"] == "alice" and info["label"] == "t" and info["expires"]


def test_cookie_alone_authenticates(local_server):
    s = requests.Session()
    s.post(local_server.url + "/api/auth/access_token", json={
        "username": "bob", "password": local_server.password_for("bob")}).raise_for_status()
    r = s.get(local_server.url + "/api/jobs")
    assert r.status_code == 200 and isinstance(r.json(), list)


@pytest.mark.parametrize("body, status, match", [
    ({"username": "alice", "password": "wrong"}, 401, "wrong username or password"),
    ({"username": "nobody", "password": "x"}, 401, "wrong username or password"),
    ({"username": "alice"}, 400, "password"),
    ({"username": "alice", "password": "x", "lifetime": -5}, 400, "lifetime"),
    ({"username": "alice", "password": "x", "lifetime": "a week"}, 400, "lifetime"),
])
def test_bad_logins(local_server, body, status, match):
    r = requests.post(local_server.url + "/api/auth/access_token", json=body)
    assert r.status_code == status
    assert match in r.json()["message"]


def test_login_body_not_json(local_server):
    r = requests.post(local_server.url + "/api/auth/access_token", data=b"{nope",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]


def test_login_by_form_fields(local_server):
    r = requests.post(local_server.url + "/auth/access_token",
                      data={"username": "bob", "password": local_server.password_for("bob")})
    assert r.status_code == 200 and r.json()["access_token"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Cookie": "access_token=nope"},
                                     {"Authorization": "Basic YWxpY2U6eA=="}])
def test_missing_or_bad_token_is_401_json(local_server, headers):
    r = requests.get(local_server.url + "/api/jobs", headers=headers)
    assert r.status_code == 401
    assert "access token" in r.json()["message"]


def test_revoke_on_both_paths(local_server):
    for path in ("/api/auth/access_token", "/auth/access_token"):
        token = EverestClient.login(local_server.url, "alice",
                                    local_server.password_for("alice"))
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.delete(local_server.url + path, headers=headers).status_code == 200
        r = requests.get(local_server.url + "/api/auth/access_token", headers=headers)
        assert r.status_code == 401
    with pytest.raises(AuthError):
        EverestClient(local_server.url, token).jobs()


def test_expired_token_is_refused(local_server):
    token = EverestClient.login(local_server.url, "alice", local_server.password_for("alice"),
                                lifetime=1)
    client = EverestClient(local_server.url, token, retries=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.jobs()
        except AuthError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("a one-second token still worked after 10 s")


# -- cross-site requests -----------------------------------------------------------------


def _cookie_session(local_server, user="alice") -> requests.Session:
    s = requests.Session()
    s.cookies.set("access_token", local_server.token_for(user))
    return s


def test_cookie_post_from_other_origin_is_refused(local_server):
    s = _cookie_session(local_server)
    r = s.post(local_server.url + "/api/apps/sleep", json={"inputs": {"duration": 0}},
               headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["message"]
    r = s.delete(local_server.url + "/api/user/tmp_files",
                 headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = s.post(local_server.url + "/api/apps/sleep", json={"inputs": {"duration": 0}},
               headers={"Origin": "null"})
    assert r.status_code == 403


def test_cookie_post_from_same_origin_and_bearer_from_anywhere_pass(local_server):
    s = _cookie_session(local_server)
    r = s.post(local_server.url + "/api/apps/sleep", json={"inputs": {"duration": 0}},
               headers={"Origin": local_server.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201
    r = requests.post(local_server.url + "/api/apps/sleep", json={"inputs": {"duration": 0}},
                      headers={"Origin": "http://evil.example",
                               "Authorization": f"Bearer {local_server.token}"})
    assert r.status_code == 201


def test_login_from_other_origin_is_refused(local_server):
    r = requests.post(local_server.url + "/api/auth/access_token",
                      json={"username": "alice", "password": local_server.password_for("alice")},
                      headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert "Set-Cookie" not in r.headers


# -- applications ----------------------------------------------------------------------------


def test_apps_list_and_lookups(alice):
    apps = {a["alias"]: a for a in alice.apps()}
    assert {"hostname", "sleep", "append", "MyNewEverestApplication"} <= set(apps)
    sleep = apps["sleep"]
    assert re.fullmatch(r"[0-9a-f]{24}", sleep["id"]) and sleep["owner"] == "local"
    by_id = alice.app(sleep["id"])
    assert by_id == alice.app("local/sleep") == alice.app("sleep")
    assert by_id["inputs"]["duration"]["type"] == "number"
    assert by_id["config"]["command"].startswith("python3 ")


@pytest.mark.parametrize("ref", ["0123456789abcdef01234567", "local/nope", "nope", "a/b"])
def test_unknown_app_is_404(alice, ref):
    with pytest.raises(NotFoundError):
        alice.app(ref)
    with pytest.raises(NotFoundError):
        alice.submit(ref, {})


def test_search_apps(alice):
    assert [a["alias"] for a in alice.search_apps("SLE")] == ["sleep"]
    everything = alice.search_apps("")
    assert len(everything) == len(alice.apps())
    page1 = alice.search_apps("", page=1, page_size=2)
    page2 = alice.search_apps("", page=2, page_size=2)
    assert len(page1) == 2 and page1 != page2 and page1 + page2 == everything[:4]
    alice.wait(alice.submit("hostname", {}).id, timeout=30)
    assert alice.search_apps("", sort_by="jobs")[0]["jobs"] >= 1


@pytest.mark.parametrize("query", ["pagenum=0", "pagesize=x", "sortBy=colour"])
def test_search_bad_parameters_are_400(alice, query):
    with pytest.raises(BadRequestError):
        alice.request("GET", f"/api/apps/search?name=s&{query}")


# -- submitting --------------------------------------------------------------------------------


def test_submit_answers_201_with_the_job(local_server):
    r = requests.post(local_server.url + "/api/apps/local/hostname",
                      json={"name": "n1", "inputs": {}},
                      headers={"Authorization": f"Bearer {local_server.token}"})
    assert r.status_code == 201
    job = r.json()
    assert job["name"] == "n1" and job["appAlias"] == "hostname" and job["appName"]
    assert set(job) >= {"id", "name", "state", "inputs", "appId", "appAlias", "appName",
                        "result", "info"}


@pytest.mark.parametrize("inputs, match", [
    ({}, "input 'duration'.*required"),
    ({"duration": "1"}, "input 'duration' must be a number"),
    ({"duration": None}, "'duration'.*required"),
    ([1], "JSON object"),
])
def test_bad_inputs_are_400_naming_the_input(alice, inputs, match):
    with pytest.raises(BadRequestError, match=match):
        alice.submit("sleep", inputs)


def test_unknown_inputs_are_tolerated(alice):
    job = alice.submit("sleep", {"duration": 0, "colour": "blue"})
    assert job.inputs["colour"] == "blue"
    assert alice.wait(job.id, timeout=30).state == JobState.DONE


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"name": 5, "inputs": {}}',
                                  b'{"inputs": {}, "resources": "r1"}'])
def test_malformed_submit_bodies_are_400(local_server, body):
    r = requests.post(local_server.url + "/api/apps/hostname", data=body,
                      headers={"Authorization": f"Bearer {local_server.token}",
                               "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"]


def test_file_input_must_be_one_of_your_files(alice, bob, tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("alice's")
    uri = alice.upload(f)["uri"]
    with pytest.raises(BadRequestError, match="input 'file'"):
        bob.submit("append", {"message": "m", "file": uri})
    with pytest.raises(BadRequestError, match="input 'file'"):
        alice.submit("append", {"message": "m", "file": "https://example.org/x.txt"})
    with pytest.raises(BadRequestError, match="input 'file'"):
        alice.submit("append", {"message": "m", "file": "/api/files/temp/../../etc/passwd"})


# -- jobs ---------------------------------------------------------------------------------------


def test_job_lifecycle_log_and_listing(alice):
    job = alice.submit("hostname", {}, name=f"life-{uuid.uuid4().hex[:6]}")
    done = alice.wait(job.id, timeout=30)
    assert done.state == JobState.DONE and done.result["hostname"]
    assert done.id in [j.id for j in alice.jobs()]
    log = alice.log(job.id)
    lines = log.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), log
    assert "submitted" in lines[0] and "Job DONE" in lines[-1]
    assert f"Task {job.id}-0-0 started" in log


def test_other_users_jobs_and_files_are_404(alice, bob, tmp_path):
    job = alice.wait(alice.submit("hostname", {}).id, timeout=30)
    for call in (bob.job, bob.log, bob.cancel, bob.delete_job):
        with pytest.raises(NotFoundError):
            call(job.id)
    assert job.id not in [j.id for j in bob.jobs()]
    f = tmp_path / "a.txt"
    f.write_text("secret")
    uri = alice.upload(f)["uri"]
    with pytest.raises(NotFoundError):
        bob.read(uri)
    with pytest.raises(NotFoundError):
        bob.delete_file(uri)
    bob.delete_temp_files()
    assert alice.read(uri) == b"secret"
    assert alice.job(job.id).state == JobState.DONE


@pytest.mark.parametrize("job_id", ["0123456789abcdef01234567", "x" * 500, "..", "%2e%2e"])
def test_unknown_job_is_404(alice, job_id):
    with pytest.raises(NotFoundError):
        alice.job(job_id)


def test_cancel_queued_running_and_finished(alice):
    running = alice.submit("sleep", {"duration": 60})
    wait_for_state(alice, running.id, "RUNNING")
    alice.cancel(running.id)
    ended = alice.wait(running.id, timeout=30)
    assert ended.state == JobState.CANCELLED and "cancelled" in ended.info
    assert "interrupting" in alice.log(running.id)
    done = alice.wait(alice.submit("hostname", {}).id, timeout=30)
    alice.cancel(done.id)  # a finished job stays as it was
    assert alice.job(done.id).state == JobState.DONE


def test_delete_job_and_delete_by_name(alice, bob):
    name = f"batch-{secrets.token_hex(4)}"
    ids = [alice.submit("sleep", {"duration": 0}, name=name).id for _ in range(3)]
    other = alice.submit("sleep", {"duration": 0}, name=name + "-other").id
    bobs = bob.submit("sleep", {"duration": 0}, name=name).id
    alice.delete_jobs(name)
    for job_id in ids:
        with pytest.raises(NotFoundError):
            alice.job(job_id)
    assert alice.job(other).name == name + "-other"
    assert bob.job(bobs).name == name  # only the caller's jobs go
    alice.delete_job(other)
    with pytest.raises(NotFoundError):
        alice.job(other)
    with pytest.raises(BadRequestError, match="name"):
        alice.request("DELETE", "/api/jobs")


def test_deleting_a_job_removes_its_files(alice, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("x")
    uri = alice.upload(f)["uri"]
    job = alice.wait(alice.submit("append", {"message": "m", "file": uri}).id, timeout=30)
    out = job.result["file"]
    assert alice.read(out) == b"x\nm\n"
    alice.delete_job(job.id)
    with pytest.raises(NotFoundError):
        alice.read(out)


def test_running_job_delete_stops_its_process(alice):
    job = alice.submit("sleep", {"duration": 60})
    wait_for_state(alice, job.id, "RUNNING")
    alice.delete_job(job.id)
    with pytest.raises(NotFoundError):
        alice.job(job.id)


# -- files -------------------------------------------------------------------------------------


def test_upload_download_delete(alice, tmp_path):
    f = tmp_path / "data file.bin"
    f.write_bytes(b"\x00\x01 binary")
    up = alice.upload(f)
    assert up["filename"] == "data file.bin" and up["length"] == 9
    assert up["uri"].startswith("/api/files/") and up["uri"].endswith("data%20file.bin")
    target = alice.download(up["uri"], tmp_path / "back.bin")
    assert target.read_bytes() == b"\x00\x01 binary"
    alice.delete_file(up["uri"])
    with pytest.raises(NotFoundError):
        alice.read(up["uri"])


def test_ten_megabyte_upload_round_trips(alice, tmp_path):
    data = secrets.token_bytes(10 * 1024 * 1024)
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    up = alice.upload(f)
    assert up["length"] == len(data)
    assert alice.download(up["uri"], tmp_path / "big.back").read_bytes() == data


def test_upload_field_name_does_not_matter_and_no_file_is_400(local_server):
    auth = {"Authorization": f"Bearer {local_server.token}"}
    r = requests.post(local_server.url + "/api/files/temp", headers=auth,
                      files={"sendfile": ("s.txt", b"abc")})
    assert r.status_code == 200 and r.json()["filename"] == "s.txt"
    r = requests.post(local_server.url + "/api/files/temp", headers=auth, data={"a": "b"})
    assert r.status_code == 400 and "file" in r.json()["message"]


@pytest.mark.parametrize("name", ["../../escape.txt", "..\\..\\escape.txt", "/etc/escape.txt"])
def test_dotdot_file_names_stay_inside(local_server, name):
    r = requests.post(local_server.url + "/api/files/temp",
                      headers={"Authorization": f"Bearer {local_server.token}"},
                      files={"file": (name, b"payload")})
    assert r.status_code == 200
    body = r.json()
    assert body["filename"] == "escape.txt" and ".." not in body["uri"]
    data_dir = Path(local_server.data_dir)
    stored = [p for p in data_dir.rglob("escape.txt")]
    assert stored and all((data_dir / "files") in p.parents for p in stored)
    assert not (data_dir.parent / "escape.txt").exists() and not Path("/etc/escape.txt").exists()


def test_dotdot_uris_never_escape(local_server, tmp_path):
    auth = {"Authorization": f"Bearer {local_server.token}"}
    server_db = "everest.sqlite3"
    for path in ("/api/files/temp/../../" + server_db, "/api/files/../" + server_db,
                 "/api/files/%2e%2e/%2e%2e/" + server_db, "/api/files/jobs/..%2f..%2f" + server_db,
                 "/api/files/temp/x/..%2F..%2F..%2Fserver.json"):
        status, headers, body = _raw(local_server, "GET", path, auth)
        assert status == 404, (path, status)
        assert b"SQLite" not in body and b'"pid"' not in body


def test_delete_all_temp_files(alice, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("t")
    uris = [alice.upload(f)["uri"] for _ in range(2)]
    alice.delete_temp_files()
    for uri in uris:
        with pytest.raises(NotFoundError):
            alice.read(uri)


# -- errors everywhere are JSON ----------------------------------------------------------------


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/nothing-here", 404),
    ("GET", "/favicon-nope.ico", 404),
    ("POST", "/api/apps", 405),
    ("PUT", "/api/apps", 405),
    ("PATCH", "/api/jobs/0123456789abcdef01234567", 405),
    ("GET", "/api/jobs/0123456789abcdef01234567/cancel", 405),
])
def test_unknown_routes_and_methods_answer_json(local_server, method, path, status):
    code, headers, body = _raw(local_server, method, path,
                               {"Authorization": f"Bearer {local_server.token}"})
    assert code == status
    assert headers["Content-Type"].startswith("application/json")
    import json

    assert json.loads(body)["message"]


def test_stats_count_requests_per_route(local_server, alice):
    job = alice.submit("hostname", {})
    before = requests.get(local_server.url + "/_local/stats").json()["requests"]
    for _ in range(3):
        alice.job(job.id)
    after = requests.get(local_server.url + "/_local/stats").json()["requests"]
    assert after["GET /api/jobs/{job}"] - before.get("GET /api/jobs/{job}", 0) == 3
    assert after["POST /api/apps/{app}"] >= 1


def test_upload_cut_off_midway_leaves_nothing_behind(local_server):
    import socket

    files_dir = Path(local_server.data_dir) / "files"
    before = {p for p in files_dir.rglob("*")}
    head = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"cut.bin\"\r\n\r\n")
    host, port = local_server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/files/temp HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + local_server.token.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=b0undary\r\n"
                     b"Content-Length: 1000000\r\n\r\n" + head + b"x" * 300000)
        deadline = time.monotonic() + 10
        while not any(p.name == ".cut.bin.part" for p in files_dir.rglob("*")):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while {p for p in files_dir.rglob("*")} - before:
        assert time.monotonic() < deadline, "a cut-off upload left files behind"
        time.sleep(0.05)


def test_libcurl_style_upload_with_expect_100_continue(local_server):
    """What libcurl (the C++ Templet SDK) sends: cookie auth, Expect: 100-continue."""
    import socket

    body = (b"--cb\r\nContent-Disposition: form-data; name=\"sendfile\"; filename=\"c.txt\"\r\n"
            b"\r\n" + b"c" * 5000 + b"\r\n--cb--\r\n")
    host, port = local_server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/files/temp HTTP/1.1\r\nHost: x\r\n"
                     b"Cookie: access_token=" + local_server.token.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=cb\r\n"
                     b"Expect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        answer = b""
        while b'"length"' not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"filename":"c.txt"' in answer
