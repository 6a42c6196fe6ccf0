"""A client's kept-alive connection to a session, once its first request was answered, is
served by the relay's lean loop (:class:`launcher.relay.proxy.KeptConnection`): driven here
over real sockets (a relay process, a runner's SSH forward, a small HTTP server playing the
notebook) — several requests with bodies on one connection, credentials stripped on every
one, another session's or a relay route's request on the same connection, a session ended
between two requests, a WebSocket upgrade as a later request, a client leaving mid-body."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.waiting import wait_for
from tests.harness.relay import RelayProcess
from tests.harness.runner import FakeRunner, new_key, public_text, redeem
from tests.harness.server import ServerProcess
from tests.session.helpers import Api, request_body

TOKEN = "notebook-token-" + "k" * 20


@pytest.fixture(scope="module")
def relay(real_components: None, local_server: ServerProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay whose user connections wait 3 s (not 10) for a missing tunnel, and which
    closes a client connection idle for 3 s."""
    proc = RelayProcess(tmp_path_factory.mktemp("relay") / "state", local_server.url,
                        "--hold", "3", "--http-idle-timeout", "3")
    try:
        yield proc.start()
    finally:
        proc.stop()



class _QuietServer(ThreadingHTTPServer):
    """The notebook's server, without the traceback ``socketserver`` prints when a request
    is cut off: several tests cut requests off on purpose (and check what arrived)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

class Notebook:
    """An HTTP/1.1 server playing a session's notebook. Every answer is JSON of what it got
    (``path``, ``headers``, body ``length`` and ``sha256``) except: ``cookies`` sets the
    relay's, Everest's and its own cookie; ``unframed`` answers without a length and closes;
    ``malformed`` answers a head with a Content-Length that is no number;
    a WebSocket upgrade is answered 101, then every byte is echoed. ``ended`` counts
    requests whose body ended before its length (the relay closed the channel)."""

    def __init__(self) -> None:
        self.cut_bodies = 0
        notebook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                path = urlsplit(self.path).path
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    self.send_response(101)
                    self.send_header("Upgrade", "websocket")
                    self.send_header("Connection", "Upgrade")
                    self.end_headers()
                    self.wfile.flush()
                    while data := self.connection.recv(65536):
                        self.connection.sendall(data)
                    self.close_connection = True
                    return
                if path.endswith("/malformed"):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n")
                    self.close_connection = True
                    return
                if path.endswith("/unframed"):
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"until the end" * 1000)
                    self.close_connection = True
                    return
                digest, length = hashlib.sha256(), 0
                for data in request_body(self):
                    digest.update(data)
                    length += len(data)
                if length < int(self.headers.get("Content-Length") or 0):
                    notebook.cut_bodies += 1  # the client cut its body off: nobody to answer
                    return
                body = json.dumps({"path": self.path, "headers": list(self.headers.items()),
                                   "length": length, "sha256": digest.hexdigest()}).encode()
                self.send_response(200)
                if path.endswith("/cookies"):
                    for cookie in ("relay_token=stolen", "access_token=stolen", "mine=1"):
                        self.send_header("Set-Cookie", f"{cookie}; Path=/")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Length", "12345")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Session:
    id: str
    base: str  # the session's base URL path, /session/<id>/


@pytest.fixture
def sessions(relay: RelayProcess, alice: Api, ssh_peer: FakeRunner
             ) -> Iterator[Callable[..., tuple[Session, Notebook]]]:
    """Makes ready sessions of Alice's (``new_session``'s fields as keywords), each with
    its own notebook behind a forward."""
    stops: list[Callable[[], None]] = []

    def make(**fields: Any) -> tuple[Session, Notebook]:
        session = alice.new_session(**fields)
        key = new_key()
        resp = redeem(relay.url, session["ticket"], public_text(key), TOKEN)
        assert resp.status_code == 200, resp.text
        grant = resp.json()
        notebook = Notebook()
        stops.append(notebook.stop)
        conn = ssh_peer.connect(relay.ssh_port, session["id"], key, grant["host_key"])
        stops.append(lambda: ssh_peer.close(conn))
        ssh_peer.run(conn.forward_remote_port(grant["forward"]["host"],
                                              grant["forward"]["port"], "127.0.0.1",
                                              notebook.port))
        alice.wait_state(session["id"], "ready")
        return Session(session["id"], grant["base_url"]), notebook

    try:
        yield make
    finally:
        for stop in reversed(stops):
            stop()


def _client(relay: RelayProcess) -> http.client.HTTPConnection:
    url = urlsplit(relay.url)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=30)


def _ask(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None, chunked: bool = False
         ) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
    resp = conn.getresponse()
    return resp.status, resp, resp.read()


def _port(conn: http.client.HTTPConnection) -> int:
    """The client side port of ``conn``'s socket: the same one means the same connection
    (http.client reconnects silently when the server closed it)."""
    assert conn.sock is not None, "the relay closed the kept-alive connection"
    return conn.sock.getsockname()[1]


def test_many_requests_with_bodies_on_one_connection(relay: RelayProcess, sessions,
                                                     local_server: ServerProcess) -> None:
    session, _ = sessions()
    bobs = local_server.token_for("bob")
    stolen = {"Cookie": f"access_token={bobs}; _xsrf=abc; relay_token={bobs}",
              "Authorization": f"Bearer {bobs}"}
    conn = _client(relay)
    status, _, body = _ask(conn, "GET", session.base + "first")
    assert status == 200 and json.loads(body)["path"] == session.base + "first"
    port = _port(conn)
    payload = bytes(range(256)) * 4099  # about 1 MB
    digest = hashlib.sha256(payload).hexdigest()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    asks = [("GET", "a?x=1", None, False), ("POST", "b", payload, False),
            ("PUT", "c", chunks(), True), ("POST", "d", b"", False),
            ("DELETE", "e", None, False), ("GET", "f", None, False)]
    for method, path, data, chunked in asks:
        status, resp, body = _ask(conn, method, session.base + path, data, dict(stolen),
                                  chunked=chunked)
        seen = json.loads(body)
        assert status == 200, body
        assert seen["path"] == session.base + path
        headers = {name.lower(): value for name, value in seen["headers"]}
        # Everest's and the relay's credentials never reach the notebook, on any request
        assert bobs not in json.dumps(seen)
        assert headers["cookie"] == "_xsrf=abc"
        assert "authorization" not in headers
        if data is not None and method != "DELETE" and path != "d":
            assert (seen["length"], seen["sha256"]) == (len(payload), digest)
            assert ("transfer-encoding" in headers) == chunked
        assert _port(conn) == port  # still the first connection
    # the notebook's own token passes, in either scheme JupyterLab accepts
    for scheme in ("token", "Bearer"):
        _, _, body = _ask(conn, "GET", session.base + "t",
                          headers={"Authorization": f"{scheme} {TOKEN}"})
        assert dict(json.loads(body)["headers"])["Authorization"] == f"{scheme} {TOKEN}"
    assert _port(conn) == port


def test_answers_keep_their_rules_on_a_kept_connection(relay: RelayProcess, sessions
                                                       ) -> None:
    session, _ = sessions()
    conn = _client(relay)
    _ask(conn, "GET", session.base + "first")
    port = _port(conn)
    status, resp, _ = _ask(conn, "GET", session.base + "cookies")
    assert status == 200
    # a session must not set the relay's or Everest's cookie; its own pass
    assert resp.headers.get_all("Set-Cookie") == ["mine=1; Path=/"]
    # an answer that ends when the notebook closes reaches the client whole, and the client
    # connection stays usable
    status, resp, body = _ask(conn, "GET", session.base + "unframed")
    assert status == 200 and body == b"until the end" * 1000
    status, resp, body = _ask(conn, "HEAD", session.base + "h")
    assert status == 200 and body == b""
    status, _, body = _ask(conn, "GET", session.base + "after")
    assert status == 200 and json.loads(body)["path"] == session.base + "after"
    assert _port(conn) == port


def test_another_sessions_request_and_a_relay_route_on_the_same_connection(
        relay: RelayProcess, sessions) -> None:
    first, _ = sessions()
    second, _ = sessions()
    conn = _client(relay)
    for session in (first, second, first):
        status, _, body = _ask(conn, "GET", session.base + "p")
        assert status == 200 and json.loads(body)["path"] == session.base + "p"
    status, _, body = _ask(conn, "GET", "/api/relay")
    assert status == 200 and json.loads(body)["service"] == "everest-jupyter relay"
    status, _, body = _ask(conn, "GET", first.base + "q")
    assert status == 200 and json.loads(body)["path"] == first.base + "q"
    status, _, body = _ask(conn, "GET", "/session/" + "0" * 24 + "/x")
    assert status == 404 and "message" in json.loads(body)


def test_a_session_ended_between_two_requests_is_answered_as_ended(
        relay: RelayProcess, sessions, alice: Api) -> None:
    session, _ = sessions()
    conn = _client(relay)
    status, _, _ = _ask(conn, "GET", session.base + "p")
    assert status == 200
    resp = alice("DELETE", f"/api/sessions/{session.id}")
    assert resp.status_code in (200, 202, 204), resp.text
    alice.wait_state(session.id, "ended")
    status, resp, body = _ask(conn, "GET", session.base + "p")
    assert status == 404
    assert json.loads(body) == {"message": f"no live session {session.id} on this relay"}


def _raw(relay: RelayProcess) -> socket.socket:
    url = urlsplit(relay.url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def _read_answer(file: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer (Content-Length framed) from a socket's file."""
    status = int(file.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := file.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, file.read(int(headers.get("content-length", "0")))


def test_a_websocket_upgrade_as_a_later_request_is_spliced(relay: RelayProcess, sessions
                                                           ) -> None:
    session, _ = sessions()
    host = urlsplit(relay.url).netloc
    with _raw(relay) as sock, sock.makefile("rb") as file:
        for path in ("a", "b"):  # two kept-alive requests, sent at once (pipelined)
            sock.sendall(f"GET {session.base}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                         .encode())
        for path in ("a", "b"):
            status, _, body = _read_answer(file)
            assert status == 200 and json.loads(body)["path"] == session.base + path
        sock.sendall(f"GET {session.base}api/kernels/k/channels HTTP/1.1\r\nHost: {host}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13"
                     "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        assert file.readline().startswith(b"HTTP/1.1 101")
        while file.readline() != b"\r\n":
            pass
        sock.sendall(b"spliced bytes")
        assert file.read(len(b"spliced bytes")) == b"spliced bytes"


def test_a_client_leaving_mid_body_ends_the_notebooks_request(relay: RelayProcess, sessions
                                                              ) -> None:
    session, notebook = sessions()
    host = urlsplit(relay.url).netloc
    with _raw(relay) as sock, sock.makefile("rb") as file:
        sock.sendall(f"GET {session.base}a HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert _read_answer(file)[0] == 200
        sock.sendall(f"POST {session.base}b HTTP/1.1\r\nHost: {host}\r\n"
                     "Content-Length: 1000000\r\n\r\n".encode() + b"x" * 5000)
    wait_for(lambda: notebook.cut_bodies == 1, timeout=20, what="the notebook's request to "
             "end when the client left")
    conn = _client(relay)  # the relay serves on
    status, _, body = _ask(conn, "GET", session.base + "c")
    assert status == 200 and json.loads(body)["path"] == session.base + "c"


def test_a_malformed_chunked_body_is_refused(relay: RelayProcess, sessions) -> None:
    session, _ = sessions()
    host = urlsplit(relay.url).netloc
    with _raw(relay) as sock, sock.makefile("rb") as file:
        sock.sendall(f"GET {session.base}a HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert _read_answer(file)[0] == 200
        sock.sendall(f"POST {session.base}b HTTP/1.1\r\nHost: {host}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n".encode())
        assert file.readline().startswith(b"HTTP/1.1 400")
        while file.readline() not in (b"\r\n", b""):
            pass
        assert file.read() == b""  # and the connection is closed


def test_an_idle_kept_connection_is_closed_as_tornado_would(relay: RelayProcess, sessions
                                                           ) -> None:
    session, _ = sessions()
    host = urlsplit(relay.url).netloc
    with _raw(relay) as sock, sock.makefile("rb") as file:
        for path in ("a", "b"):
            sock.sendall(f"GET {session.base}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                         .encode())
            assert _read_answer(file)[0] == 200
        assert file.read() == b""  # closed by the relay (--http-idle-timeout), not ours


def test_a_hub_sessions_kept_connection(relay: RelayProcess, sessions,
                                        local_server: ServerProcess) -> None:
    """A hub-mode session (served at its hub prefix, with the hub's credentials passing)
    on a kept connection, then a lab session's request and an unknown prefix on it."""
    prefix = f"/user/alice/{uuid.uuid4().hex[:8]}/"
    hub, _ = sessions(mode="hub", label="hub1/alice/x", base_url=prefix, hub_env={
        "JUPYTERHUB_API_TOKEN": "hub-secret-" + "s" * 20,
        "JUPYTERHUB_SERVICE_PREFIX": prefix})
    lab, _ = sessions()
    bobs = local_server.token_for("bob")
    conn = _client(relay)
    for path in ("a", "b?c=1", "d"):
        status, _, body = _ask(conn, "GET", prefix + path, headers={
            "Authorization": "token hub-issued", "Cookie": f"access_token={bobs}; h=1"})
        seen = json.loads(body)
        assert status == 200 and seen["path"] == prefix + path
        headers = {name.lower(): value for name, value in seen["headers"]}
        assert headers["authorization"] == "token hub-issued"  # the hub's credential
        assert headers["cookie"] == "h=1"
    status, _, body = _ask(conn, "GET", lab.base + "x")
    assert status == 200 and json.loads(body)["path"] == lab.base + "x"
    status, _, body = _ask(conn, "GET", prefix + "e")
    assert status == 200 and json.loads(body)["path"] == prefix + "e"
    status, _, body = _ask(conn, "GET", "/user/nobody/x")
    assert status == 404 and "message" in json.loads(body)


def test_a_malformed_answer_on_a_kept_connection_is_a_502(relay: RelayProcess, sessions
                                                          ) -> None:
    session, _ = sessions()
    conn = _client(relay)
    assert _ask(conn, "GET", session.base + "a")[0] == 200
    status, resp, body = _ask(conn, "GET", session.base + "malformed")
    assert status == 502
    assert json.loads(body) == {"message": "the session's notebook sent a malformed answer"}
    conn.close()
    assert _ask(_client(relay), "GET", session.base + "b")[0] == 200
