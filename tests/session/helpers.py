"""Peers and probes for the session tests: a TCP proxy that can cut a tunnel, an HTTP proxy,
processes found by working directory, a kernel driven over its WebSocket, small status and
echo servers. The processes themselves (server, relay, runner) are in :mod:`tests.harness`."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests
import websocket

from tests.fixtures.waiting import WAIT, wait_for  # noqa: F401 - the session tests' import


def request_body(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """The body of the request ``handler`` (an ``http.server`` handler) is answering, piece
    by piece as it comes: chunked (trailers read past) or ``Content-Length`` framed. A
    client that cuts a framed body off ends it early, with ``handler.close_connection``
    set."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while size := int(handler.rfile.readline().split(b";")[0], 16):
            yield handler.rfile.read(size)
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b""):
            pass
        return
    left = int(handler.headers.get("Content-Length") or 0)
    while left > 0:
        data = handler.rfile.read(min(left, 1 << 16))
        if not data:
            handler.close_connection = True
            return
        left -= len(data)
        yield data


def tiny_wheel(folder: Path, name: str = "tinypkg", answer: int = 42) -> Path:
    """A minimal pure-Python wheel ``name`` (``name.ANSWER == answer``; no dependencies, so
    pip needs no index)."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": f"ANSWER = {answer}\n",
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                          "Version: 1.0\n",
        f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                       "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in {**files, f"{name}-1.0.dist-info/RECORD": record}.items():
            zf.writestr(member, text)
    return path


class Api:
    """The relay's HTTP API as one user."""

    def __init__(self, url: str, token: str | None, verify: str | None = None):
        self.url = url
        self.verify = verify  # per request: REQUESTS_CA_BUNDLE would beat a session's
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kw: Any) -> requests.Response:
        if self.verify:
            kw.setdefault("verify", self.verify)
        return self.http.request(method, self.url + path, timeout=30, **kw)

    def new_session(self, **body: Any) -> dict[str, Any]:
        resp = self("POST", "/api/sessions", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def session(self, sid: str) -> dict[str, Any]:
        resp = self("GET", f"/api/sessions/{sid}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_state(self, sid: str, state: str, timeout: float = WAIT) -> dict[str, Any]:
        return wait_for(lambda: (s := self.session(sid))["state"] == state and s, timeout,
                        f"session {sid} to be {state}")


def pids_with_cwd_under(folder: Path) -> list[int]:
    """Processes (JupyterLab, kernels) whose working directory is inside ``folder``."""
    root = str(folder.resolve()) + os.sep
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd") + os.sep
            except OSError:
                continue
            if cwd.startswith(root):
                found.append(int(entry.name))
    return found


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def kill_under(folder: Path) -> None:
    for pid in pids_with_cwd_under(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def split_url(url: str) -> tuple[str, str]:
    """A session URL ``http://h:p/session/<id>/lab?token=T`` -> (base URL, token)."""
    base, _, token = url.partition("?token=")
    return base.rsplit("lab", 1)[0], token


def run_in_kernel(base: str, token: str, code: str, timeout: float = WAIT) -> str:
    """Start a kernel, run ``code`` over the kernel's WebSocket, return its stdout, and shut
    the kernel down. Everything goes through ``base`` (the tunnel)."""
    auth = {"Authorization": f"token {token}"}
    kernel = requests.post(base + "api/kernels", headers=auth, json={"name": "python3"},
                           timeout=30)
    kernel.raise_for_status()
    kid = kernel.json()["id"]
    try:
        return _execute(base, token, kid, code, timeout)
    finally:
        requests.delete(base + f"api/kernels/{kid}", headers=auth, timeout=30)


def _execute(base: str, token: str, kernel_id: str, code: str, timeout: float) -> str:
    ws_url = base.replace("http", "ws", 1) + f"api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"],
                                     timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError(f"kernel error: {msg['content']['evalue']}")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
        raise AssertionError("the kernel did not finish in time")
    finally:
        ws.close()


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 whose connections a test can cut (a flaky network). It
    binds its own port at once; ``target_port`` may be set later (before the first
    connection), for a target that binds its port only when it starts."""

    def __init__(self, target_port: int = 0):
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> int:
        """Cut every open connection, both ways; returns how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads; peers see EOF
                    s.close()
                except OSError:
                    pass
        return len(pairs)

    def close(self) -> None:
        self._stopped = True
        self._server.close()
        self.cut()


class HttpProxy:
    """An HTTP proxy on 127.0.0.1 (threads): ``CONNECT`` tunnels and absolute-form requests
    (``POST http://host/...``), as a company network's proxy serves them. ``seen`` lists
    ``(method, target)`` of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        line, _, headers = head.partition(b"\r\n")
        method, target, version = line.decode("latin-1").split(" ")
        self.seen.append((method, target))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urllib.parse.urlsplit(target)
            upstream = socket.create_connection((url.hostname, url.port or 80))
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream.sendall(f"{method} {path} {version}\r\n".encode("latin-1") + headers
                             + b"\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=TcpProxy._pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def status_server(base_url: str, token: str) -> tuple[int, Callable[[], None]]:
    """A tiny HTTP server answering ``GET <base_url>api/status`` 200 with the right token
    (what the relay's probe asks a notebook), 403 otherwise; returns (port, stop)."""
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            ok = (self.path == base_url + "api/status"
                  and self.headers.get("Authorization") == f"token {token}")
            body = b'{"started": "x"}' if ok else b'{"message": "forbidden"}'
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return _serve(Handler)


def _serve(handler: type) -> tuple[int, Callable[[], None]]:
    """Serve ``handler`` on a free loopback port in a thread; returns (port, stop)."""
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return server.server_address[1], stop


def echo_server(base_url: str, token: str) -> tuple[int, Callable[[], None]]:
    """An HTTP server playing a notebook behind the tunnel: ``api/status`` as
    :func:`status_server`; ``big?n=N`` answers N bytes, chunked; anything else answers
    ``{"path", "headers": [[name, value]...], "length", "sha256"}`` of the request it got
    (headers exactly as received: what a session would see). Returns (port, stop)."""
    import hashlib
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import parse_qs, urlsplit

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            url = urlsplit(self.path)
            if url.path == base_url + "api/status":
                ok = self.headers.get("Authorization") == f"token {token}"
                self._send(200 if ok else 403, b'{"started": "x"}')
                return
            if url.path == base_url + "big":
                n = int(parse_qs(url.query)["n"][0])
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"x" * 65536
                while n > 0:
                    part = block[:min(n, len(block))]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    n -= len(part)
                self.wfile.write(b"0\r\n\r\n")
                return
            digest, length = hashlib.sha256(), 0
            for data in request_body(self):
                digest.update(data)
                length += len(data)
            body = json.dumps({"path": self.path, "headers": list(self.headers.items()),
                               "length": length, "sha256": digest.hexdigest()}).encode()
            self._send(200, body)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args: Any) -> None:
            pass

    return _serve(Handler)
