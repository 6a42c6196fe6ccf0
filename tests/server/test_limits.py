"""Resources run out gracefully: on a real full filesystem (a 6 MiB tmpfs holding the data
directory) every request gets a JSON 507 or works, deletes still free space, and nothing is
lost; per-user limits on jobs in flight and stored bytes answer 429 with Retry-After."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from everest_local.auth import SignInLinks
from tests.harness.server import ServerProcess, password_for

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 6 MiB tmpfs, mounted for this module (root may mount; the tests run as root)."""
    mount = tmp_path_factory.mktemp("tiny-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def full_server(real_components: None, tiny_disk: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tiny_disk / "data", extra_args=["--disk-reserve", str(1 << 20)])
    try:
        yield proc.start()
    finally:
        proc.close()


def _upload(server: ServerProcess, token: str, size: int) -> requests.Response:
    return requests.post(server.url + "/api/files/temp", timeout=60,
                         headers={"Authorization": f"Bearer {token}"},
                         files={"file": ("blob.bin", os.urandom(size))})


def test_a_full_disk_answers_507_and_deletes_free_it(full_server: ServerProcess,
                                                     tiny_disk: Path) -> None:
    token = full_server.token_for("alice")
    stored = []
    while True:  # fill the filesystem with uploads until the server says it is full
        resp = _upload(full_server, token, 256 << 10)
        if resp.status_code != 200:
            break
        stored.append(resp.json()["uri"])
        assert len(stored) < 100, "the 6 MiB disk never filled"
    assert resp.status_code == 507, resp.text
    assert "disk is full" in resp.json()["message"]
    # a full disk everywhere: sign-in and submit say so too, or work; never a 500
    login = requests.post(full_server.url + "/api/auth/access_token", timeout=30,
                          json={"username": "bob", "password": password_for("bob")})
    assert login.status_code in (200, 507), login.text
    submit = requests.post(full_server.url + "/api/apps/sleep", timeout=30,
                           json={"inputs": {"duration": 0}},
                           headers={"Authorization": f"Bearer {token}"})
    assert submit.status_code in (201, 507), submit.text
    # reading still works, and so does freeing space through the API
    jobs = requests.get(full_server.url + "/api/jobs", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    assert jobs.status_code == 200
    freed = requests.delete(full_server.url + "/api/user/tmp_files", timeout=30,
                            headers={"Authorization": f"Bearer {token}"})
    assert freed.status_code == 200 and freed.json()["deleted"] == len(stored)
    assert _upload(full_server, token, 256 << 10).status_code == 200  # room again
    # nothing half-written stayed: every file row has its bytes, no stray parts
    with sqlite3.connect(full_server.data_dir / "everest.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        paths = [Path(p) for (p,) in db.execute("SELECT path FROM files")]
    assert all(p.exists() for p in paths)
    assert not list((full_server.data_dir / "files").rglob("*.part"))


@pytest.fixture(scope="module")
def limited(real_components: None,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("limited") / "data",
                         apps=[HERE / "apps" / "slow-echo", HERE / "apps" / "bulky"],
                         users=("alice", "bob", "carol"),
                         extra_args=["--max-jobs-in-flight", "2", "--max-stored-bytes", "1000"])
    try:
        yield proc.start()
    finally:
        proc.close()


def test_jobs_in_flight_are_limited_per_user(limited: ServerProcess) -> None:
    alice, bob = limited.client("alice"), limited.client("bob")
    running = [alice.submit("slow-echo", {"duration": 60, "text": "x"}) for _ in range(2)]
    try:
        third = requests.post(limited.url + "/api/apps/slow-echo", timeout=30,
                              json={"inputs": {"duration": 60, "text": "x"}},
                              headers={"Authorization": f"Bearer {limited.token_for('alice')}"})
        assert third.status_code == 429 and int(third.headers["Retry-After"]) > 0
        assert "limit" in third.json()["message"]
        other = bob.submit("slow-echo", {"duration": 0, "text": "y"})  # bob has his own
        assert bob.wait(other.id, timeout=60).state == "DONE"
    finally:
        for job in running:
            alice.cancel(job.id)
    for job in running:
        alice.wait(job.id, timeout=60)
    again = alice.submit("slow-echo", {"duration": 0, "text": "z"})  # room again
    assert alice.wait(again.id, timeout=60).state == "DONE"


def test_stored_bytes_are_limited_per_user(limited: ServerProcess) -> None:
    token = limited.token_for("bob")
    assert _upload(limited, token, 600).status_code == 200
    over = _upload(limited, token, 600)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert "limit of 1000 bytes" in over.json()["message"]
    assert not list((limited.data_dir / "files").rglob("blob.bin"))[1:]  # the second is gone
    requests.delete(limited.url + "/api/user/tmp_files", timeout=30,
                    headers={"Authorization": f"Bearer {token}"})
    assert _upload(limited, token, 600).status_code == 200


def _bearer(server: ServerProcess, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token_for(user)}"}


def _signs_in_as(server: ServerProcess, link: dict) -> str | None:
    code = link["path"].split("#", 1)[1]
    resp = requests.post(server.url + "/api/auth/signin", json={"code": code}, timeout=30)
    return resp.json()["username"] if resp.status_code == 200 else None


def test_one_user_minting_10001_sign_in_links_blocks_no_one(limited: ServerProcess) -> None:
    # what `everest-jupyter ui` asks for; before the cap, 10,001 outstanding links made every
    # user's `ui` fail for the links' two minutes. Pipelined on one connection (quick).
    parts = urlsplit(limited.url)
    request = (f"POST /api/auth/signin_link HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Authorization: Bearer {limited.token_for('bob')}\r\n"
               "Content-Length: 0\r\n\r\n").encode()
    answers = bytearray()
    with socket.create_connection((parts.hostname, parts.port), timeout=120) as conn:
        conn.sendall(request * 10_001)
        conn.shutdown(socket.SHUT_WR)
        while chunk := conn.recv(1 << 20):
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 OK") == 10_001, answers[-500:]
    paths = re.findall(rb'"path":"(/signin#[^"]+)"', answers)
    first, last = ({"path": p.decode()} for p in (paths[0], paths[-1]))
    alices = requests.post(limited.url + "/api/auth/signin_link", timeout=30,
                           headers=_bearer(limited, "alice"))
    assert alices.status_code == 200, alices.text
    assert _signs_in_as(limited, alices.json()) == "alice"
    assert _signs_in_as(limited, last) == "bob"  # the minter's own newest link works too
    assert _signs_in_as(limited, first) is None  # it gave way to the newer ones


def test_sign_in_links_are_capped_overall_and_expired_ones_purged() -> None:
    links = SignInLinks(lifetime=120, per_user=2, total=4)
    for user in ("a", "a", "a", "b", "b"):
        links.issue(user, now=0.0)
    assert len(links) == 4  # a's first gave way to a's third
    with pytest.raises(ValueError, match="too many sign-in links"):
        links.issue("c", now=1.0)  # every user together holds the overall cap
    code = links.issue("c", now=121.0)  # the first four have expired: purged, room again
    assert len(links) == 1
    assert links.redeem(code, now=122.0) == "c" and links.redeem(code, now=122.0) is None


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


BIG = 200 << 20  # 200 MiB, over the 1000-byte cap


def test_a_big_upload_over_the_quota_is_refused_before_its_body(limited: ServerProcess) -> None:
    # as curl sends a big file: Content-Length and Expect: 100-continue, body held back
    before = _bytes_under(limited.data_dir)
    parts = urlsplit(limited.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/files/temp")
        for name, value in (("Authorization", f"Bearer {limited.token_for('alice')}"),
                            ("Content-Type", "multipart/form-data; boundary=XyZ"),
                            ("Content-Length", str(BIG + 200)), ("Expect", "100-continue")):
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()  # the answer comes without a byte of the body sent
        assert resp.status == 429 and int(resp.getheader("Retry-After")) > 0
        assert "limit of 1000 bytes" in json.loads(resp.read())["message"]
    finally:
        conn.close()
    assert _bytes_under(limited.data_dir) - before < (1 << 20)


def test_a_streamed_upload_is_cut_off_once_past_the_quota(limited: ServerProcess) -> None:
    # no Content-Length (chunked): the quota is checked as the file streams in
    before = _bytes_under(limited.data_dir)
    sent = 0

    def body():
        nonlocal sent
        yield (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
               b"filename=\"big.bin\"\r\n\r\n")
        block = b"\0" * (1 << 20)
        while sent < BIG:
            sent += len(block)
            yield block
        yield b"\r\n--XyZ--\r\n"

    try:
        resp = requests.post(limited.url + "/api/files/temp", data=body(), timeout=60,
                             headers={"Authorization": f"Bearer {limited.token_for('alice')}",
                                      "Content-Type": "multipart/form-data; boundary=XyZ"})
        assert resp.status_code == 429, resp.text
    except requests.ConnectionError:
        pass  # the server closed the connection while the client was still sending
    # the client could send no more than the sockets' buffers once the server stopped reading
    print(f"\nstreamed upload: {sent >> 20} MiB of {BIG >> 20} MiB sent before the cut")
    assert sent < BIG // 4, sent
    assert _bytes_under(limited.data_dir) - before < (1 << 20)
    assert not list((limited.data_dir / "files").rglob("*.part"))


def test_job_outputs_count_against_the_quota(limited: ServerProcess) -> None:
    carol = limited.client("carol")
    small = carol.wait(carol.submit("bulky", {"megabytes": 0.0005}).id, timeout=60)
    assert small.state == "DONE" and small.result["file"]  # 500 bytes: within the 1000
    big = carol.wait(carol.submit("bulky", {"megabytes": 95}).id, timeout=120)
    assert big.state == "FAILED", big
    assert "were not kept" in big.info and "limit of 1000 bytes" in big.info
    assert not big.result.get("file")
    # 95 MB did not stay: carol's files are the small output alone
    stored = sqlite3.connect(limited.data_dir / "everest.sqlite3").execute(
        "SELECT COALESCE(SUM(length), 0) FROM files WHERE owner='carol'").fetchone()[0]
    assert stored == 500
    assert _bytes_under(limited.data_dir / "files") < (1 << 20)
