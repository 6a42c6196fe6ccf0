"""Real processes and peers for the session tests: the relay, the runner, a TCP proxy, a
test SSH client that plays a runner, and a kernel driven over its WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import requests
import websocket

from tests.fixtures.waiting import WAIT, wait_for  # noqa: F401 - the session tests' import

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "agent_scripts" / "session_runner.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def cli_command() -> list[str]:
    """``everest-jupyter`` as this checkout's module."""
    return [sys.executable, "-m", "launcher.cli"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVEREST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                        if p)
    env.update(extra)
    return env


class RelayProcess:
    """``python -m launcher.relay`` on fixed ports (so a restart keeps them)."""

    def __init__(self, state_dir: Path, everest_url: str, *extra: str):
        self.state_dir = Path(state_dir)
        self.everest_url = everest_url
        self.http_port = free_port()
        self.ssh_port = free_port()
        self.extra = list(extra)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}.log"

    def start(self) -> RelayProcess:
        info = self.state_dir.parent / f"{self.state_dir.name}.json"
        info.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "launcher.relay", "--everest", self.everest_url,
               "--state-dir", str(self.state_dir), "--http", f"127.0.0.1:{self.http_port}",
               "--ssh", f"127.0.0.1:{self.ssh_port}", "--info-file", str(info), *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env(), cwd=REPO)
        wait_for(lambda: info.exists() or self.proc.poll() is not None, 30, "the relay")
        assert self.proc.poll() is None, f"relay exited:\n{self.log()}"
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-10000:]


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


def redeem(relay_url: str, ticket: str, public_key: str, token: str = "t" * 32,
           **extra: Any) -> requests.Response:
    body = {"ticket": ticket, "public_key": public_key, "notebook_token": token,
            "runner": {"hostname": "test"}, **extra}
    return requests.post(relay_url + "/api/tickets/redeem", json=body, timeout=30)


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def start_runner(workdir: Path, relay_url: str, ticket: str, *args: str,
                 env: dict[str, str] | None = None,
                 python: str = sys.executable) -> subprocess.Popen:
    """The session runner as a task would run it: its own process group, in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(RUNNER), f"--relay={relay_url}", f"--ticket={ticket}", *args]
    with open(workdir / "runner.out", "ab") as out:
        return subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                env=env or child_env(), start_new_session=True)


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)


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
    """A TCP forwarder on 127.0.0.1 whose connections a test can cut (a flaky network)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
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


class FakeRunner:
    """A test-controlled SSH peer that enrolled a key like a runner does, on its own loop
    thread; for the relay's security and routing tests, where JupyterLab adds nothing."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, awaitable: Any, timeout: float = WAIT) -> Any:
        """Await ``awaitable`` on the peer's loop; its result or exception."""
        async def wait() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout)

    def close(self, closable: Any) -> None:
        """Close an SSH connection or listener on the peer's loop, and wait until it is."""
        async def close() -> None:
            closable.close()
            await closable.wait_closed()

        self.run(close())

    def connect(self, port: int, username: str, key: asyncssh.SSHKey, host_key: str,
                websocket: str | None = None, ca_certs: str | None = None
                ) -> asyncssh.SSHClientConnection:
        """Log in with ``key``, pinning ``host_key``: to the SSH port on 127.0.0.1, or through
        the relay's tunnel entrance at ``websocket`` (a ``ws(s)://`` URL)."""
        return self.dial(port, websocket, ca_certs, username=username, client_keys=[key],
                         known_hosts=([asyncssh.import_public_key(host_key)], [], []),
                         preferred_auth="publickey")

    def dial(self, port: int, websocket: str | None = None, ca_certs: str | None = None,
             **options: Any) -> asyncssh.SSHClientConnection:
        """``asyncssh.connect`` with ``options``, directly or over a WebSocket."""
        async def dial() -> asyncssh.SSHClientConnection:
            sock = await websocket_socket(websocket, ca_certs) if websocket else None
            return await asyncssh.connect("127.0.0.1", port, sock=sock, config=None,
                                          agent_path=None, **options)

        return self.run(dial())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


async def websocket_socket(url: str, ca_certs: str | None = None) -> socket.socket:
    """A socket whose bytes travel as binary WebSocket messages to ``url`` and back, for
    asyncssh's ``sock=`` (tornado's client on the caller's loop; an independent check of the
    relay's entrance, not the runner's own client)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import WebSocketClosedError, websocket_connect

    ws = await websocket_connect(HTTPRequest(url, ca_certs=ca_certs, connect_timeout=15))
    mine, theirs = socket.socketpair()
    theirs.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=theirs)

    async def up() -> None:
        try:
            while data := await reader.read(65536):
                await ws.write_message(data, binary=True)
        except (WebSocketClosedError, OSError):
            pass
        ws.close()

    async def down() -> None:
        while (message := await ws.read_message()) is not None:
            writer.write(message)
            try:
                await writer.drain()
            except OSError:
                break
        writer.close()

    loop = asyncio.get_running_loop()
    for pump in (up(), down()):
        loop.create_task(pump)
    return mine


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
            for data in self._body():
                digest.update(data)
                length += len(data)
            body = json.dumps({"path": self.path, "headers": list(self.headers.items()),
                               "length": length, "sha256": digest.hexdigest()}).encode()
            self._send(200, body)

        def _body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    yield self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                return
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, 1 << 16))
                left -= len(data)
                yield data

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
