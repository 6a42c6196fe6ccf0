"""A session's workspace over SFTP on the relay's real SSH server (its port, and inside the
WebSocket): the runner's key reaches only its own session's workspace, only while the
session lives (plus the final-save grace); read-only copies refuse writes; links are stored,
never followed; names never escape; quota and file limits leave nothing half-written; one
writer per workspace through the API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import requests

from tests.fixtures.waiting import wait_for
from tests.harness.relay import RelayProcess
from tests.harness.runner import FakeRunner, new_key, public_text, redeem
from tests.harness.server import ServerProcess

TOKEN = "notebook-token-" + "y" * 20
QUOTA = 3_000_000
MAX_FILE = 2_000_000


@pytest.fixture(scope="module")
def relay(local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("wsrelay") / "state", local_server.url,
                        "--workspace-quota", str(QUOTA), "--workspace-max-file",
                        str(MAX_FILE), "--workspace-final-save", "3")
    try:
        yield proc.start()
    finally:
        proc.stop()


@dataclass
class Runner:
    session: dict
    grant: dict
    key: asyncssh.SSHKey
    websocket: str | None

    @property
    def sid(self) -> str:
        return self.session["id"]


def _enroll(api, relay: RelayProcess, route: str | None, **body) -> Runner:
    session = api.new_session(**body)
    key = new_key()
    resp = redeem(relay.url, session["ticket"], public_text(key), TOKEN)
    assert resp.status_code == 200, resp.text
    grant = resp.json()
    return Runner(session, grant, key, grant["ssh"]["websocket"] if route == "websocket"
                  else None)


def _sftp(peer: FakeRunner, relay: RelayProcess, r: Runner, key=None, username=None):
    conn = peer.connect(relay.ssh_port, username or r.sid, key or r.key,
                        r.grant["host_key"], websocket=r.websocket)
    return conn, peer.run(conn.start_sftp_client())


def _put(peer: FakeRunner, sftp, path: str, data: bytes) -> None:
    async def put() -> None:
        async with sftp.open(path, "wb") as f:
            await f.write(data)

    peer.run(put())


def _get(peer: FakeRunner, sftp, path: str) -> bytes:
    async def get() -> bytes:
        async with sftp.open(path, "rb") as f:
            return await f.read()

    return peer.run(get())


def _ws_root(relay: RelayProcess, owner: str, name: str = "default") -> Path:
    from urllib.parse import quote
    return relay.state_dir / "workspaces" / quote(owner, safe="") / quote(name, safe="")


@pytest.fixture(params=["ssh-port", "websocket"])
def route(request: pytest.FixtureRequest) -> str:
    return request.param


def test_a_runner_saves_and_the_next_session_reads_it(relay, alice, ssh_peer, route,
                                                      tmp_path) -> None:
    name = f"save-{route}"
    r = _enroll(alice, relay, route, workspace=name)
    assert r.grant["workspace"]["name"] == name and not r.grant["workspace"]["read_only"]
    conn, sftp = _sftp(ssh_peer, relay, r)
    data = os.urandom(1_000_000)
    ssh_peer.run(sftp.makedirs("sub/dir"))
    _put(ssh_peer, sftp, "sub/dir/.data.tmp", data)
    ssh_peer.run(sftp.posix_rename("sub/dir/.data.tmp", "sub/dir/data.bin"))
    ssh_peer.run(sftp.symlink("sub/dir/data.bin", "link"))
    ssh_peer.close(conn)
    assert alice("DELETE", f"/api/sessions/{r.sid}").status_code == 200
    # one snapshot, cut from what was saved (the runner never said its final save came:
    # the grace passes)
    snaps = _ws_root(relay, "alice", name) / "snapshots"
    wait_for(lambda: any(snaps.glob("*/snapshot.json")), 30, "the snapshot")
    r2 = _enroll(alice, relay, route, workspace=name)
    conn, sftp = _sftp(ssh_peer, relay, r2)
    try:
        assert _get(ssh_peer, sftp, "sub/dir/data.bin") == data
        # asyncssh's own parallel get (range requests, sparse-file checks) works too
        local = tmp_path / "copy"
        ssh_peer.run(sftp.get("sub", str(local), recurse=True))
        assert (local / "dir" / "data.bin").read_bytes() == data
        assert ssh_peer.run(sftp.readlink("link")) == "sub/dir/data.bin"
    finally:
        ssh_peer.close(conn)


def test_one_writer_and_read_only(relay, alice, ssh_peer) -> None:
    r = _enroll(alice, relay, None, workspace="one")
    resp = alice("POST", "/api/sessions", json={"workspace": "one"})
    assert resp.status_code == 409 and r.sid in resp.json()["message"]
    ro = _enroll(alice, relay, None, workspace="one", read_only=True)
    assert ro.grant["workspace"]["read_only"]
    conn, sftp = _sftp(ssh_peer, relay, ro)
    try:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            _put(ssh_peer, sftp, "x.txt", b"x")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            ssh_peer.run(sftp.mkdir("d"))
    finally:
        ssh_peer.close(conn)
    assert alice("POST", "/api/sessions", json={"workspace": "../x"}).status_code == 400
    assert alice("POST", "/api/sessions", json={"read_only": True}).status_code == 400


def test_links_are_never_followed_and_paths_never_escape(relay, alice, ssh_peer,
                                                         tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    r = _enroll(alice, relay, None, workspace="links")
    conn, sftp = _sftp(ssh_peer, relay, r)
    try:
        ssh_peer.run(sftp.symlink(str(tmp_path), "out"))
        ssh_peer.run(sftp.symlink(str(secret), "file-out"))
        for bad in ("out/secret.txt", "file-out"):
            with pytest.raises((asyncssh.SFTPPermissionDenied, asyncssh.SFTPNoSuchFile)):
                _get(ssh_peer, sftp, bad)
        with pytest.raises((asyncssh.SFTPPermissionDenied, asyncssh.SFTPNoSuchFile)):
            _put(ssh_peer, sftp, "out/new.txt", b"x")
        with pytest.raises((asyncssh.SFTPPermissionDenied, asyncssh.SFTPNoSuchFile)):
            ssh_peer.run(sftp.listdir("out"))
        assert not (tmp_path / "new.txt").exists()
        # stat never follows: the link's own attributes
        assert ssh_peer.run(sftp.stat("file-out")).type == asyncssh.FILEXFER_TYPE_SYMLINK
        # .. stops at the workspace root; absolute paths are inside it
        _put(ssh_peer, sftp, "../../../../escape.txt", b"e")
        _put(ssh_peer, sftp, "/etc-passwd", b"p")
        root = _ws_root(relay, "alice", "links") / "current"
        assert (root / "escape.txt").read_bytes() == b"e"
        assert (root / "etc-passwd").read_bytes() == b"p"
        assert ssh_peer.run(sftp.realpath("../..")) == "/"
        with pytest.raises(asyncssh.SFTPError):
            ssh_peer.run(sftp.link("escape.txt", "hard"))
        assert sorted(ssh_peer.run(sftp.listdir("."))) == sorted(
            [".", "..", "out", "file-out", "escape.txt", "etc-passwd"])
    finally:
        ssh_peer.close(conn)


def test_quota_and_file_limit_leave_nothing_half_written(relay, bob, ssh_peer) -> None:
    r = _enroll(bob, relay, None, workspace="big")
    conn, sftp = _sftp(ssh_peer, relay, r)
    root = _ws_root(relay, "bob", "big") / "current"
    try:
        with pytest.raises(asyncssh.SFTPFailure, match="too large"):
            _put(ssh_peer, sftp, "huge.bin", b"h" * (MAX_FILE + 1))
        assert not (root / "huge.bin").exists()
        _put(ssh_peer, sftp, "a.bin", b"a" * 1_900_000)
        with pytest.raises(asyncssh.SFTPFailure, match="quota"):
            _put(ssh_peer, sftp, "b.bin", b"b" * 1_900_000)
        assert sorted(p.name for p in root.iterdir()) == ["a.bin"]
    finally:
        ssh_peer.close(conn)


def test_a_key_reaches_only_its_own_session_and_only_while_it_lives(
        relay, alice, bob, ssh_peer) -> None:
    mine = _enroll(alice, relay, None, workspace="private")
    theirs = _enroll(bob, relay, None, workspace="private")
    no_ws = _enroll(alice, relay, None)
    # bob's runner key cannot log in as alice's session
    with pytest.raises(asyncssh.PermissionDenied):
        _sftp(ssh_peer, relay, mine, key=theirs.key)
    # a session without a workspace gets no SFTP
    conn = ssh_peer.connect(relay.ssh_port, no_ws.sid, no_ws.key, no_ws.grant["host_key"])
    try:
        with pytest.raises(asyncssh.ChannelOpenError):
            ssh_peer.run(conn.start_sftp_client())
    finally:
        ssh_peer.close(conn)
    # each sees its own workspace
    conn, sftp = _sftp(ssh_peer, relay, theirs)
    _put(ssh_peer, sftp, "bob.txt", b"bob")
    ssh_peer.close(conn)
    conn, sftp = _sftp(ssh_peer, relay, mine)
    assert ssh_peer.run(sftp.listdir(".")) in ([".", ".."], ["..", "."])
    ssh_peer.close(conn)
    # ended, with the final save reported: the key no longer logs in
    resp = requests.post(f"{relay.url}/api/sessions/{mine.sid}/ended", timeout=30, json={
        "end_token": mine.grant["end_token"], "stop": "interrupted",
        "workspace": {"saved": True, "files": 0, "bytes": 0}})
    assert resp.status_code == 200, resp.text
    with pytest.raises(asyncssh.PermissionDenied):
        _sftp(ssh_peer, relay, mine)
    view = alice.session(mine.sid)
    assert view["workspace"]["report"]["saved"] is True


def test_after_a_stop_the_final_save_may_land_within_the_grace(relay, alice, ssh_peer
                                                                ) -> None:
    r = _enroll(alice, relay, None, workspace="grace")
    tunnel = ssh_peer.connect(relay.ssh_port, r.sid, r.key, r.grant["host_key"])
    ssh_peer.run(tunnel.forward_remote_port(r.grant["forward"]["host"],
                                            r.grant["forward"]["port"], "127.0.0.1", 9))
    alice.wait_state(r.sid, "connected")
    # stopped at the relay while its runner is connected: the runner may still save
    assert alice("DELETE", f"/api/sessions/{r.sid}").status_code == 200
    conn, sftp = _sftp(ssh_peer, relay, r)  # the grace: SFTP only, no forward
    try:
        _put(ssh_peer, sftp, "last.txt", b"final")
        with pytest.raises(asyncssh.ChannelListenError):
            ssh_peer.run(conn.forward_remote_port(r.grant["forward"]["host"],
                                                  r.grant["forward"]["port"], "127.0.0.1", 9))
    finally:
        ssh_peer.close(conn)
    requests.post(f"{relay.url}/api/sessions/{r.sid}/ended", timeout=30, json={
        "end_token": r.grant["end_token"], "workspace": {"saved": True}})
    snaps = list((_ws_root(relay, "alice", "grace") / "snapshots").glob("*/snapshot.json"))
    assert len(snaps) == 1
    assert (snaps[0].parent / "files" / "last.txt").read_bytes() == b"final"
    with pytest.raises(asyncssh.PermissionDenied):
        _sftp(ssh_peer, relay, r)
