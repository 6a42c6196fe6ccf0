"""The relay's SSH side, driven by a test SSH client that enrolled its key like a runner:
only the enrolled key logs in, only its own forward may be asked for, nothing else is
allowed; the route appears, is probed, drops and comes back at the same URL."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import asyncssh
import pytest
import requests

from tests.harness.processes import REPO
from tests.harness.relay import RelayProcess
from tests.harness.runner import FakeRunner, new_key, public_text, redeem
from tests.harness.server import ServerProcess
from tests.session.helpers import Api, echo_server, status_server

TOKEN = "notebook-token-" + "x" * 20
AGENT_SCRIPTS = REPO / "agent_scripts"


@pytest.fixture(scope="module")
def relay(real_components: None,
          local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RelayProcess]:
    """A relay whose user connections wait 3 s (not 10) for a missing tunnel."""
    proc = RelayProcess(tmp_path_factory.mktemp("relay") / "state", local_server.url,
                        "--hold", "3")
    try:
        yield proc.start()
    finally:
        proc.stop()


@dataclass
class Enrolled:
    session: dict
    grant: dict
    key: asyncssh.SSHKey
    websocket: str | None  # the relay's tunnel entrance, when the test goes through it

    @property
    def port(self) -> int:
        return self.grant["forward"]["port"]


@pytest.fixture(params=["ssh-port", "websocket"])
def enrolled(request: pytest.FixtureRequest, relay: RelayProcess, alice: Api) -> Enrolled:
    """A session whose ticket the test redeemed with its own key; the test's SSH goes to the
    relay's SSH port, or in a WebSocket on its API port (every test runs both ways)."""
    session = alice.new_session()
    key = new_key()
    resp = redeem(relay.url, session["ticket"], public_text(key), TOKEN)
    assert resp.status_code == 200, resp.text
    grant = resp.json()
    websocket = grant["ssh"]["websocket"] if request.param == "websocket" else None
    return Enrolled(session, grant, key, websocket)


def _connect(peer: FakeRunner, relay: RelayProcess, e: Enrolled, key=None, username=None):
    return peer.connect(relay.ssh_port, username or e.session["id"], key or e.key,
                        e.grant["host_key"], websocket=e.websocket)


def _forward(peer: FakeRunner, conn, e: Enrolled, notebook_port: int, host=None, port=None):
    return peer.run(conn.forward_remote_port(
        e.grant["forward"]["host"] if host is None else host,
        e.port if port is None else port, "127.0.0.1", notebook_port))


def test_only_the_enrolled_key_logs_in(relay: RelayProcess, enrolled: Enrolled,
                                       ssh_peer: FakeRunner) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        _connect(ssh_peer, relay, enrolled, key=new_key())
    with pytest.raises(asyncssh.PermissionDenied):
        _connect(ssh_peer, relay, enrolled, username="0123456789abcdef01234567")
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_peer.dial(relay.ssh_port, enrolled.websocket, username=enrolled.session["id"],
                      password="guess", known_hosts=None, client_keys=None)
    conn = _connect(ssh_peer, relay, enrolled)
    ssh_peer.close(conn)


def test_a_session_that_was_not_redeemed_has_no_key(relay: RelayProcess, alice: Api,
                                                    enrolled: Enrolled,
                                                    ssh_peer: FakeRunner) -> None:
    waiting = alice.new_session()
    with pytest.raises(asyncssh.PermissionDenied):
        _connect(ssh_peer, relay, enrolled, username=waiting["id"])


def test_only_its_own_forward_may_be_asked_for(relay: RelayProcess, alice: Api,
                                                enrolled: Enrolled, ssh_peer: FakeRunner
                                                ) -> None:
    conn = _connect(ssh_peer, relay, enrolled)
    try:
        for host, port in ((None, enrolled.port + 1), (None, relay.http_port),
                           (None, 0), ("0.0.0.0", None), ("example.org", None)):
            with pytest.raises(asyncssh.ChannelListenError):
                _forward(ssh_peer, conn, enrolled, 9, host=host, port=port)
        assert alice.session(enrolled.session["id"])["state"] == "starting"
    finally:
        ssh_peer.close(conn)


def test_shells_commands_subsystems_and_outbound_opens_are_refused(
        relay: RelayProcess, local_server: ServerProcess, enrolled: Enrolled,
        ssh_peer: FakeRunner) -> None:
    conn = _connect(ssh_peer, relay, enrolled)
    try:
        with pytest.raises(asyncssh.ChannelOpenError):
            ssh_peer.run(conn.create_process())  # a shell
        with pytest.raises(asyncssh.ChannelOpenError):
            ssh_peer.run(conn.run("id"))
        with pytest.raises((asyncssh.ChannelOpenError, asyncssh.SFTPError)):
            ssh_peer.run(conn.start_sftp_client())
        server_port = int(local_server.url.rsplit(":", 1)[1])
        with pytest.raises(asyncssh.ChannelOpenError):
            ssh_peer.run(conn.open_connection("127.0.0.1", server_port))  # direct-tcpip
    finally:
        ssh_peer.close(conn)


def test_forward_is_probed_then_routes_users_and_survives_a_reconnect(
        relay: RelayProcess, alice: Api, enrolled: Enrolled, ssh_peer: FakeRunner) -> None:
    sid, base = enrolled.session["id"], enrolled.grant["base_url"]
    notebook_port, stop = status_server(base, TOKEN)
    url = f"{relay.url}{base}api/status"
    auth = {"Authorization": f"token {TOKEN}"}
    try:
        conn = _connect(ssh_peer, relay, enrolled)
        _forward(ssh_peer, conn, enrolled, notebook_port)
        ready = alice.wait_state(sid, "ready")  # the relay's probe went through the tunnel
        assert ready["url"] == f"{relay.url}{base}lab?token={TOKEN}"  # the relay's own port
        assert requests.get(url, headers=auth, timeout=10).status_code == 200

        ssh_peer.close(conn)
        alice.wait_state(sid, "disconnected")
        # no tunnel: a user request waits for one (3 s here), then gets a JSON 502
        late = requests.get(url, headers=auth, timeout=30)
        assert late.status_code == 502 and "not connected" in late.json()["message"]

        conn = _connect(ssh_peer, relay, enrolled)  # the same key, the same forward
        _forward(ssh_peer, conn, enrolled, notebook_port)
        alice.wait_state(sid, "ready")
        assert requests.get(url, headers=auth, timeout=10).status_code == 200
        ssh_peer.close(conn)
    finally:
        stop()


def test_a_newer_connection_replaces_an_older_one(relay: RelayProcess, alice: Api,
                                                  enrolled: Enrolled,
                                                  ssh_peer: FakeRunner) -> None:
    notebook_port, stop = status_server(enrolled.grant["base_url"], TOKEN)
    try:
        first = _connect(ssh_peer, relay, enrolled)
        _forward(ssh_peer, first, enrolled, notebook_port)
        alice.wait_state(enrolled.session["id"], "ready")
        second = _connect(ssh_peer, relay, enrolled)  # a runner whose old link went stale
        _forward(ssh_peer, second, enrolled, notebook_port)
        ssh_peer.run(first.wait_closed())  # the relay closed the stale one
        alice.wait_state(enrolled.session["id"], "ready")
        ssh_peer.close(second)
    finally:
        stop()


def test_withdrawing_the_forward_ends_the_session(relay: RelayProcess, alice: Api,
                                                  enrolled: Enrolled,
                                                  ssh_peer: FakeRunner) -> None:
    notebook_port, stop = status_server(enrolled.grant["base_url"], TOKEN)
    try:
        conn = _connect(ssh_peer, relay, enrolled)
        listener = _forward(ssh_peer, conn, enrolled, notebook_port)
        alice.wait_state(enrolled.session["id"], "ready")
        ssh_peer.close(listener)  # cancel-tcpip-forward: what a runner does when it stops
        alice.wait_state(enrolled.session["id"], "ended")
        ssh_peer.close(conn)
        with pytest.raises(asyncssh.PermissionDenied):
            _connect(ssh_peer, relay, enrolled)
    finally:
        stop()


def test_ending_a_session_cuts_its_runner_off(relay: RelayProcess, alice: Api,
                                              enrolled: Enrolled, ssh_peer: FakeRunner
                                              ) -> None:
    notebook_port, stop = status_server(enrolled.grant["base_url"], TOKEN)
    try:
        conn = _connect(ssh_peer, relay, enrolled)
        _forward(ssh_peer, conn, enrolled, notebook_port)
        alice.wait_state(enrolled.session["id"], "ready")
        alice("DELETE", f"/api/sessions/{enrolled.session['id']}")
        ssh_peer.run(conn.wait_closed())
        with pytest.raises(asyncssh.PermissionDenied):
            _connect(ssh_peer, relay, enrolled)
    finally:
        stop()


def _self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("entrance", ["ssh-port", "websocket"])
def test_with_tls_the_api_and_the_sessions_speak_https(
        local_server: ServerProcess, ssh_peer: FakeRunner, tmp_path, entrance: str) -> None:
    cert, key_file = _self_signed(tmp_path)
    proc = RelayProcess(tmp_path / "state", local_server.url, "--certfile", cert,
                        "--keyfile", key_file)
    proc.start()
    try:
        api = Api(proc.url, local_server.token_for("alice"), verify=cert)
        session = api.new_session()
        assert session["relay_url"].startswith("https://")
        key = new_key()
        grant = requests.post(proc.url + "/api/tickets/redeem", verify=cert, timeout=30, json={
            "ticket": session["ticket"], "public_key": public_text(key),
            "notebook_token": TOKEN}).json()
        assert grant["url"].startswith(proc.url + "/session/")
        assert grant["ssh"]["websocket"] == proc.url.replace("https", "wss") + "/api/tunnel"
        websocket = grant["ssh"]["websocket"] if entrance == "websocket" else None
        notebook_port, stop = status_server(grant["base_url"], TOKEN)
        try:
            conn = ssh_peer.connect(proc.ssh_port, grant["session_id"], key, grant["host_key"],
                                    websocket=websocket, ca_certs=cert)
            ssh_peer.run(conn.forward_remote_port(grant["forward"]["host"],
                                                  grant["forward"]["port"], "127.0.0.1",
                                                  notebook_port))
            ready = api.wait_state(grant["session_id"], "ready")  # probed over TLS
            base, token = ready["url"].split("lab?token=")
            resp = requests.get(base + "api/status", verify=cert, timeout=10,
                                headers={"Authorization": f"token {token}"})
            assert resp.status_code == 200  # TLS ends at the relay; plain bytes in the tunnel
            # one kept TLS connection: its later requests are served by the relay's kept
            # connection, a relay route's goes back to tornado, and the session's after it
            kept = requests.Session()
            kept.headers["Authorization"] = f"token {token}"
            for url in (base + "api/status", base + "api/status", proc.url + "/api/relay",
                        base + "api/status"):
                assert kept.get(url, verify=cert, timeout=10).status_code == 200, url
            with pytest.raises(requests.ConnectionError):
                requests.get(base.replace("https", "http", 1) + "api/status", timeout=10)
            ssh_peer.close(conn)
        finally:
            stop()
    finally:
        proc.stop()


@pytest.fixture
def echoing(relay: RelayProcess, alice: Api, enrolled: Enrolled,
            ssh_peer: FakeRunner) -> Iterator[str]:
    """A ready session whose "notebook" echoes what it receives; yields its base URL."""
    notebook_port, stop = echo_server(enrolled.grant["base_url"], TOKEN)
    conn = _connect(ssh_peer, relay, enrolled)
    try:
        _forward(ssh_peer, conn, enrolled, notebook_port)
        alice.wait_state(enrolled.session["id"], "ready")
        yield relay.url + enrolled.grant["base_url"]
    finally:
        ssh_peer.close(conn)
        stop()


def test_everest_credentials_never_reach_a_session(echoing: str, local_server: ServerProcess
                                                   ) -> None:
    # Bob is signed in to Everest (its cookie is sent to every port of the host) and opens
    # Alice's session: the session must see neither his cookie nor his bearer token.
    bobs = local_server.token_for("bob")
    seen = requests.get(echoing + "api/contents", timeout=10, headers={
        "Cookie": f"access_token={bobs}; _xsrf=abc; relay_token={bobs}",
        "Authorization": f"Bearer {bobs}"}).json()
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert bobs not in json.dumps(seen)
    assert headers["cookie"] == "_xsrf=abc"  # the notebook's own cookies pass
    assert "authorization" not in headers
    # the session's own token passes, in either scheme JupyterLab accepts
    for scheme in ("token", "Bearer"):
        seen = requests.get(echoing + "x", headers={"Authorization": f"{scheme} {TOKEN}"},
                            timeout=10).json()
        assert dict(seen["headers"])["Authorization"] == f"{scheme} {TOKEN}"


def test_large_bodies_stream_both_ways(echoing: str) -> None:
    body = os.urandom(3 << 20)
    seen = requests.put(echoing + "upload", data=body, timeout=60).json()
    assert (seen["length"], seen["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())

    def chunks():  # no Content-Length: sent chunked, forwarded chunked
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]

    seen = requests.post(echoing + "upload", data=chunks(), timeout=60).json()
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    got = requests.get(echoing + "big", params={"n": 5 << 20}, timeout=60)
    assert got.status_code == 200 and got.content == b"x" * (5 << 20)
def test_the_tunnel_entrance_speaks_only_ssh_in_binary_messages(relay: RelayProcess) -> None:
    import websocket

    def until_closed(ws: websocket.WebSocket) -> tuple[bytes, bytes]:
        """What the relay sent before its close frame, and the close frame's payload."""
        said = b""
        while (frame := ws.recv_data(control_frame=True))[0] != websocket.ABNF.OPCODE_CLOSE:
            said += frame[1]
        return said, frame[1]

    url = relay.url.replace("http", "ws", 1) + "/api/tunnel"
    ws = websocket.create_connection(url, timeout=10)
    try:
        ws.send_binary(b"GET / HTTP/1.0\r\n\r\n")  # not SSH: the SSH server hangs up
        said, _ = until_closed(ws)
        assert said.startswith(b"SSH-2.0-") and said.count(b"\n") == 1  # its version line
    finally:
        ws.close()
    ws = websocket.create_connection(url, timeout=10)
    try:
        ws.send("SSH-2.0-text")  # a text message: closed with 1003 (unsupported data)
        _, close = until_closed(ws)
        assert close[:2] == (1003).to_bytes(2, "big")
    finally:
        ws.close()


def test_the_runners_proxy_command_carries_bulk_both_ways(
        relay: RelayProcess, alice: Api, ssh_peer: FakeRunner, tmp_path) -> None:
    # What OpenSSH's runner does over the WebSocket route: SSH through the runner's
    # ProxyCommand (agent_scripts/runner_websocket.py), whose messages are up to 1 MiB —
    # many SSH packets each, which the relay hands its SSH server in slices.
    session = alice.new_session()
    key = new_key()
    grant = redeem(relay.url, session["ticket"], public_text(key), TOKEN).json()
    url_file = tmp_path / "websocket-url"
    url_file.write_text(grant["ssh"]["websocket"])
    conn = ssh_peer.dial(
        relay.ssh_port, username=session["id"], client_keys=[key],
        known_hosts=([asyncssh.import_public_key(grant["host_key"])], [], []),
        preferred_auth="publickey",
        proxy_command=[sys.executable, str(AGENT_SCRIPTS / "runner_websocket.py"),
                       str(url_file)])
    notebook_port, stop = echo_server(grant["base_url"], TOKEN)
    try:
        ssh_peer.run(conn.forward_remote_port(grant["forward"]["host"],
                                              grant["forward"]["port"], "127.0.0.1",
                                              notebook_port))
        alice.wait_state(session["id"], "ready")
        base = relay.url + grant["base_url"]
        got = requests.get(base + "big", params={"n": 24 << 20}, timeout=120)
        assert got.status_code == 200 and got.content == b"x" * (24 << 20)
        body = os.urandom(12 << 20)
        seen = requests.put(base + "upload", data=body, timeout=120).json()
        assert (seen["length"], seen["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    finally:
        ssh_peer.close(conn)
        stop()


def test_the_tunnel_entrance_takes_ssh_in_fragments_and_drops_broken_frames(
        relay: RelayProcess) -> None:
    import websocket

    url = relay.url.replace("http", "ws", 1) + "/api/tunnel"
    abnf = websocket.ABNF
    ws = websocket.create_connection(url, timeout=10)
    try:
        # a version line in a message of three frames, with a ping between them
        ws.send_frame(abnf.create_frame(b"SSH-2.0-", abnf.OPCODE_BINARY, fin=0))
        ws.ping(b"between")
        ws.send_frame(abnf.create_frame(b"frag", abnf.OPCODE_CONT, fin=0))
        ws.send_frame(abnf.create_frame(b"mented\r\n", abnf.OPCODE_CONT, fin=1))
        said, pongs = b"", []
        while b"\n" not in said or len(said.split(b"\n", 1)[1]) < 6:
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode != abnf.OPCODE_CLOSE, data
            if opcode == abnf.OPCODE_PONG:
                pongs.append(data)
            else:
                said += data
        assert pongs == [b"between"]
        # the SSH server answers a client version it read whole with its key exchange
        assert said.startswith(b"SSH-2.0-") and said.split(b"\n", 1)[1][5] == 20  # KEXINIT
    finally:
        ws.close()
    port = int(relay.url.rsplit(":", 1)[1])
    for broken in (b"\x82\x04SSH-",  # not masked: RFC 6455 requires clients to mask
                   b"\xc2\x84\0\0\0\0SSH-",  # an extension bit nobody agreed on
                   b"\x02\x84\0\0\0\0SSH-\x82\x84\0\0\0\0SSH-",  # a new message mid-message
                   b"\x80\x84\0\0\0\0SSH-"):  # a continuation of nothing
        sock, status, _ = _upgrade(port)
        try:
            assert status == 101
            sock.sendall(broken)
            sock.settimeout(10)
            while sock.recv(65536):  # the relay's version line, then the connection ends
                pass
        finally:
            sock.close()


def _upgrade(port: int) -> tuple[socket.socket, int, bytes]:
    """``/api/tunnel`` opened as a WebSocket by hand: the socket, the answer's status and
    what came of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET /api/tunnel HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(1)
        if not data:
            break
        answer += data
    return sock, int(answer.split(b" ", 2)[1]) if answer else 0, answer
