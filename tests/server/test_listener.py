"""The local server out of file descriptors: it says so once and pauses accepting, instead of
spinning its accept loop (which, with the relay as its plugin, starved the Everest API and
the relay together and wrote hundreds of MB of log), and answers again once descriptors are
back. The relay's own listener is the same one (tests/relay/test_preauth_limits.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import requests

from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess

LIMIT = 256


@pytest.fixture
def starved(real_components: None, tmp_path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data")
    server.prefix = ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"]
    try:
        yield server.start()
    finally:
        server.close()


def _answers(server: ServerProcess) -> bool:
    try:
        return requests.get(server.url + "/api/auth/access_token", timeout=5,
                            headers={"Authorization": f"Bearer {server.token}"}).ok
    except requests.RequestException:
        return False


def test_out_of_descriptors_the_server_pauses_says_so_once_and_recovers(
        starved: ServerProcess) -> None:
    token = starved.token  # signed in before the flood
    assert token and _answers(starved)
    limits = open(f"/proc/{starved.proc.pid}/limits").read()
    assert any(line.startswith("Max open files") and f" {LIMIT} " in line
               for line in limits.splitlines())
    sockets: list[socket.socket] = []
    try:
        for _ in range(LIMIT + 64):  # connect and say nothing
            try:
                sockets.append(socket.create_connection(("127.0.0.1", starved.port),
                                                        timeout=2))
            except OSError:
                pass  # the backlog was full while the server was out of descriptors
        fds = f"/proc/{starved.proc.pid}/fd"
        wait_for(lambda: len(os.listdir(fds)) >= LIMIT - 8, 60,
                 "the server to use up its file descriptors")
        wait_for(lambda: "out of file descriptors" in starved.log_text(), 30,
                 "the server to say it ran out")
        before = os.path.getsize(starved.log_path)
        wait_for(lambda: starved.proc.poll() is None and
                 os.path.getsize(starved.log_path) - before < 50_000, 5, "a quiet log")
    finally:
        for sock in sockets:
            sock.close()
    wait_for(lambda: _answers(starved), 60, "the server to answer again")
    assert starved.proc.poll() is None
    assert os.path.getsize(starved.log_path) < 200_000, "the accept loop spun"
    assert 1 <= starved.log_text().count("out of file descriptors") <= 20
