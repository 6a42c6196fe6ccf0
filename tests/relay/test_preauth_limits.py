"""What a stranger can hold of the relay before logging in: tunnel WebSockets (/api/tunnel)
are capped per address and overall and closed when no runner logs in soon; idle HTTP
connections are closed; and running out of file descriptors (1,100 idle sockets against an
open-file limit of 1024) neither spins the relay's accept loop nor stops it answering once
the sockets go, while the Everest API (its own process) answers throughout."""

from __future__ import annotations

import base64
import json
import os
import resource
import secrets
import socket
from collections.abc import Iterator

import pytest
import requests

from tests.harness.relay import RelayProcess
from tests.harness.runner import FakeRunner, new_key, public_text, redeem
from tests.harness.server import ServerProcess
from tests.session.helpers import Api, wait_for


@pytest.fixture(scope="module")
def relay(local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("relay") / "state", local_server.url,
                        "--tunnel-preauth-per-address", "3", "--tunnel-preauth-limit", "5",
                        "--tunnel-preauth-timeout", "3")
    try:
        yield proc.start()
    finally:
        proc.stop()


def _upgrade(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, int, bytes]:
    """Open ``/api/tunnel`` as a WebSocket from ``source`` and send nothing more; returns
    the socket, the answer's status and its head and body as far as they came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(("GET /api/tunnel HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            break
        answer += data
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return sock, status, answer


def _closed_by_relay(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_strangers_tunnels_are_capped_and_closed_when_nobody_logs_in(
        relay: RelayProcess) -> None:
    opened = [_upgrade(relay.http_port) for _ in range(3)]
    assert [status for _, status, _ in opened] == [101, 101, 101]
    sock, status, answer = _upgrade(relay.http_port)
    assert status == 429, answer
    body = answer.split(b"\r\n\r\n", 1)[1] or sock.recv(4096)
    assert "have not logged in yet" in json.loads(body)["message"]
    wait_for(lambda: _closed_by_relay(sock), 10, "the refused connection to be closed")
    # another address has its own three, until the overall five
    others = [_upgrade(relay.http_port, "127.0.0.2") for _ in range(2)]
    assert [status for _, status, _ in others] == [101, 101]
    assert _upgrade(relay.http_port, "127.0.0.3")[1] == 429  # five strangers in all
    # nobody logs in: each is closed by the relay, and the places are free again
    for s, _, _ in opened + others:
        wait_for(lambda s=s: _closed_by_relay(s), 20, "an idle tunnel to be closed")
        s.close()
    again, status, _ = _upgrade(relay.http_port)
    assert status == 101
    again.close()


def test_a_runner_that_logged_in_no_longer_counts(relay: RelayProcess, alice: Api,
                                                  ssh_peer: FakeRunner) -> None:
    session = alice.new_session()
    key = new_key()
    grant = redeem(relay.url, session["ticket"], public_text(key)).json()
    runner = ssh_peer.connect(relay.ssh_port, session["id"], key, grant["host_key"],
                              websocket=grant["ssh"]["websocket"])
    try:
        strangers = [_upgrade(relay.http_port) for _ in range(3)]  # the runner is not one
        assert [status for _, status, _ in strangers] == [101, 101, 101]
        for s, _, _ in strangers:  # the strangers' deadline passes; the runner's does not
            wait_for(lambda s=s: _closed_by_relay(s), 20, "an idle tunnel to be closed")
            s.close()
        assert not runner.is_closed()
    finally:
        ssh_peer.close(runner)
        alice("DELETE", f"/api/sessions/{session['id']}")


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room in this test process for 1,100 sockets and then some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if want < 1400:
        pytest.fail(f"the test needs 1,400 open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_1100_idle_sockets_under_1024_open_files(local_server: ServerProcess, tmp_path,
                                                 many_fds: None) -> None:
    relay = RelayProcess(tmp_path / "state", local_server.url, "--http-idle-timeout", "20")
    relay.prefix = ["prlimit", "--nofile=1024:1024", "--"]
    relay.start()
    sockets: list[socket.socket] = []
    try:
        limits = open(f"/proc/{relay.proc.pid}/limits").read()
        assert any(line.startswith("Max open files") and " 1024 " in line
                   for line in limits.splitlines())
        for _ in range(1100):  # connect and say nothing
            try:
                sockets.append(socket.create_connection(("127.0.0.1", relay.http_port),
                                                        timeout=2))
            except OSError:
                pass  # the relay's backlog was full while it was out of descriptors
        assert len(sockets) >= 1024
        fds = f"/proc/{relay.proc.pid}/fd"
        wait_for(lambda: len(os.listdir(fds)) >= 990, 60,
                 "the relay to use up its file descriptors")
        # the Everest API, in its own process, answers meanwhile
        assert requests.get(local_server.url + "/api/auth/access_token", timeout=10,
                            headers={"Authorization": f"Bearer {local_server.token}"}).ok

        def relay_answers() -> bool:
            try:
                return requests.get(relay.url + "/api/relay", timeout=5).ok
            except requests.RequestException:
                return False

        # the idle sockets are closed after 20 s each, so the relay answers again
        wait_for(relay_answers, 120, "the relay to answer again")
        assert relay.proc.poll() is None
        log_size = os.path.getsize(relay.log_path)
        assert log_size < 100_000, f"{log_size} bytes of log: the accept loop spun"
        said = relay.log().count("out of file descriptors")
        assert 1 <= said <= 10, relay.log()  # said so, once per time it ran out
    finally:
        for sock in sockets:
            sock.close()
        relay.stop()
