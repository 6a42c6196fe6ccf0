"""The runner's way around networks that let only HTTP(S) out: when the relay's SSH port does
not answer (refused, or silently dropped as by a firewall), the runner carries its SSH
connection in a WebSocket on the relay's HTTP port, with either SSH client; the session comes
up, runs code, heals after its connection is cut, and ends cleanly."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.processes import child_env
from tests.harness.relay import RelayProcess
from tests.harness.runner import start_runner, stop_process_group
from tests.harness.server import ServerProcess
from tests.session.helpers import (
    Api,
    HttpProxy,
    TcpProxy,
    kill_under,
    run_in_kernel,
    split_url,
    wait_for,
)


@pytest.fixture
def dead_ssh_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port where no SSH server answers: nothing listens (``refused``), or something
    accepts and never speaks (``silent``, what a dropping firewall looks like)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if request.param == "silent":
            sock.listen(16)  # never accepted: the handshake completes, no banner comes
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("tunnel", "dead_ssh_port"), [("openssh", "refused"),
                                                        ("asyncssh", "silent")],
                         indirect=["dead_ssh_port"])
def test_with_the_ssh_port_unreachable_the_session_comes_up_over_the_websocket(
        local_server: ServerProcess, tmp_path: Path, tunnel: str, dead_ssh_port: int) -> None:
    relay = RelayProcess(tmp_path / "state", local_server.url,
                         "--ssh-advertise", f"127.0.0.1:{dead_ssh_port}")
    proxy = TcpProxy()  # the runner reaches the relay's HTTP port through it
    relay.extra += ["--public-url", f"http://127.0.0.1:{proxy.port}"]  # as the operator says
    relay.start()
    proxy.target_port = relay.http_port
    api = Api(relay.url, local_server.token_for("alice"))
    session = api.new_session()
    workdir = tmp_path / "task"
    proc = start_runner(workdir, f"http://127.0.0.1:{proxy.port}", session["ticket"],
                        f"--tunnel={tunnel}", "--idle-timeout", "0")
    try:
        ready = api.wait_state(session["id"], "ready", timeout=120)
        base, token = split_url(ready["url"])
        assert run_in_kernel(base, token, "print(6*7)") == "42\n"

        assert proxy.cut() >= 1  # the WebSocket's TCP connection: the runner dials again
        wait_for(lambda: requests.get(base + "api/status", timeout=10,
                                      headers={"Authorization": f"token {token}"}).ok,
                 timeout=30, what="the URL to work again")
        assert run_in_kernel(base, token, "print(7*6)") == "42\n"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (workdir / "runner.out").read_text()
        summary = json.loads((workdir / "summary.json").read_text())
        assert summary["tunnel"]["kind"] == tunnel
        assert summary["tunnel"]["route"] == "websocket"
        assert summary["tunnel"]["connects"] >= 2
        assert "goes through the WebSocket" in (workdir / "session.log").read_text()
        assert api.session(session["id"])["state"] == "ended"
    finally:
        stop_process_group(proc)
        kill_under(workdir)
        proxy.close()
        relay.stop()


@pytest.mark.parametrize(("tunnel", "dead_ssh_port"), [("openssh", "silent"),
                                                        ("asyncssh", "refused")],
                         indirect=["dead_ssh_port"])
def test_through_an_http_proxy_the_websocket_takes_the_proxy_too(
        local_server: ServerProcess, tmp_path: Path, tunnel: str, dead_ssh_port: int) -> None:
    """A network whose only way out is an HTTP proxy: the runner's redeem request and its
    WebSocket both go through the proxy named in the environment (CONNECT for the latter)."""
    relay = RelayProcess(tmp_path / "state", local_server.url,
                         "--ssh-advertise", f"127.0.0.1:{dead_ssh_port}").start()
    proxy = HttpProxy()
    api = Api(relay.url, local_server.token_for("alice"))
    session = api.new_session()
    workdir = tmp_path / "task"
    env = {k: v for k, v in child_env().items() if "proxy" not in k.lower()}
    env["http_proxy"] = proxy.url
    proc = start_runner(workdir, relay.url, session["ticket"], f"--tunnel={tunnel}",
                        "--idle-timeout", "0", env=env)
    try:
        ready = api.wait_state(session["id"], "ready", timeout=120)
        base, token = split_url(ready["url"])
        assert run_in_kernel(base, token, "print(6*7)") == "42\n"
        assert ("POST", relay.url + "/api/tickets/redeem") in proxy.seen
        assert ("CONNECT", f"127.0.0.1:{relay.http_port}") in proxy.seen
        # and nothing else: the runner asks JupyterLab on loopback directly
        assert all(f":{relay.http_port}" in target for _, target in proxy.seen), proxy.seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (workdir / "runner.out").read_text()
        summary = json.loads((workdir / "summary.json").read_text())
        assert (summary["tunnel"]["kind"], summary["tunnel"]["route"]) == (tunnel, "websocket")
    finally:
        stop_process_group(proc)
        kill_under(workdir)
        proxy.close()
        relay.stop()


@pytest.mark.parametrize(("tunnel", "through_proxy", "dead_ssh_port"),
                         [("openssh", False, "refused"), ("asyncssh", True, "refused")],
                         indirect=["dead_ssh_port"])
def test_over_tls_the_runner_checks_the_relays_certificate(
        local_server: ServerProcess, tmp_path: Path, tunnel: str, through_proxy: bool,
        dead_ssh_port: int) -> None:
    """A relay with a certificate: the runner's WebSocket is ``wss://``, checked against the
    CAs the runner trusts (here ``SSL_CERT_FILE``), directly or inside a proxy's CONNECT."""
    from tests.relay.test_relay_ssh import _self_signed

    cert, key = _self_signed(tmp_path)
    relay = RelayProcess(tmp_path / "state", local_server.url, "--certfile", cert,
                         "--keyfile", key, "--ssh-advertise", f"127.0.0.1:{dead_ssh_port}")
    relay.start()
    proxy = HttpProxy()
    api = Api(relay.url, local_server.token_for("alice"), verify=cert)
    session = api.new_session()
    workdir = tmp_path / "task"
    env = {k: v for k, v in child_env().items() if "proxy" not in k.lower()}
    env["SSL_CERT_FILE"] = cert
    if through_proxy:
        env["https_proxy"] = proxy.url
    proc = start_runner(workdir, relay.url, session["ticket"], f"--tunnel={tunnel}",
                        "--idle-timeout", "0", env=env)
    try:
        ready = api.wait_state(session["id"], "ready", timeout=120)
        base, token = split_url(ready["url"])
        assert requests.get(base + "api/status", verify=cert, timeout=10,
                            headers={"Authorization": f"token {token}"}).status_code == 200
        log = (workdir / "session.log").read_text()
        assert f"goes through the WebSocket at wss://127.0.0.1:{relay.http_port}/" in log
        assert (("CONNECT", f"127.0.0.1:{relay.http_port}") in proxy.seen) == through_proxy
    finally:
        stop_process_group(proc)
        kill_under(workdir)
        proxy.close()
        relay.stop()
