"""The session runner's kernel mode: one ipykernel on the resource, carried to a JupyterLab
elsewhere (``launcher.kernels``'s provisioner) through the relay.

The runner starts ``ipykernel`` on 127.0.0.1 with a connection file of its own (five free
ports, a fresh HMAC key) in a working folder of its own, and serves a small HTTP endpoint
on loopback — the *control* — which the relay's tunnel forwards exactly as it forwards a
JupyterLab (the relay sees an ordinary session under ``/session/<id>/`` and probes
``api/status`` until it answers). Every request must carry the session's token
(``Authorization: token ...``); the relay passes only that credential on.

- ``GET  <base>api/status``            the kernel's state, its key and signature scheme
- ``POST <base>api/kernel/interrupt``  SIGINT to the kernel (its event on Windows)
- ``POST <base>api/kernel/restart``    a new kernel process on the same ports and key
- ``POST <base>api/kernel/kill``       end the kernel process (the job goes on)
- ``POST <base>api/kernel/shutdown``   end the kernel and the runner: the job ends
- ``GET  <base>ports/<channel>``       with ``Upgrade: websocket``: answered ``101``, after
  which the connection is the kernel's ``<channel>`` port (shell, iopub, stdin, hb,
  control) byte for byte — the relay's proxy splices an upgraded connection as it is.

The lab side must check in (any request counts) at least every ``lease`` seconds; when it
has not, the lab is gone (killed, its machine asleep) and the runner ends the job, so no
job outlives its JupyterLab for long.

Python >= 3.8, standard library only (asyncssh is the tunnel's, not this module's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger("session_runner.kernel")

CHANNELS = ("shell", "iopub", "stdin", "hb", "control")
KERNEL_DIR = "kernel"
KERNEL_LOG = "kernel.log"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 1 << 16
_MAX_HEAD = 16 << 10


def _free_ports(count: int) -> list:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class _WindowsInterrupt:
    """On Windows a kernel is interrupted through an inheritable event it was given at
    start (``JPY_INTERRUPT_EVENT``), which ipykernel's parent poller watches."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        class _SecurityAttributes(ctypes.Structure):
            _fields_ = [("nLength", wintypes.DWORD), ("lpSecurityDescriptor", ctypes.c_void_p),
                        ("bInheritHandle", wintypes.BOOL)]

        attrs = _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), None, True)
        self._kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        self.handle = self._kernel32.CreateEventA(ctypes.byref(attrs), False, False, None)

    def fire(self) -> None:
        self._kernel32.SetEvent(self.handle)


class KernelProcess:
    """One ipykernel process after another on the same connection file (ports and key).

    ``python`` runs ``-m ipykernel_launcher -f <file>`` in ``cwd``; output goes to
    ``kernel.log`` beside the connection file. :meth:`start` returns once every port
    accepts connections (so the relay's readiness probe means "the kernel answers").
    """

    def __init__(self, folder: str, cwd: str, env: dict[str, str],
                 python: str = sys.executable):
        self.folder = folder
        self.cwd = cwd
        self.env = dict(env)
        self.python = python
        os.makedirs(folder, exist_ok=True)
        os.makedirs(cwd, exist_ok=True)
        ports = _free_ports(len(CHANNELS))
        self.connection = {
            "ip": "127.0.0.1", "transport": "tcp", "key": secrets.token_hex(32),
            "signature_scheme": "hmac-sha256", "kernel_name": "python3",
            **{f"{name}_port": port for name, port in zip(CHANNELS, ports)},
        }
        self.connection_file = os.path.join(folder, "kernel-connection.json")
        fd = os.open(self.connection_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.connection, handle)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._interrupt = _WindowsInterrupt() if os.name == "nt" else None

    def port(self, channel: str) -> int:
        return int(self.connection[f"{channel}_port"])

    def start(self, timeout: float = 120.0) -> None:
        """Start a kernel (the previous one must have ended); wait until it listens."""
        env = dict(self.env)
        kwargs: dict = {}
        if self._interrupt is not None:
            env["JPY_INTERRUPT_EVENT"] = str(self._interrupt.handle)
            kwargs["close_fds"] = False
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore
        else:
            kwargs["start_new_session"] = True  # its own group: SIGINT reaches it alone
        cmd = [self.python, "-m", "ipykernel_launcher", "-f", self.connection_file]
        with open(os.path.join(self.folder, KERNEL_LOG), "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, **kwargs)
        self.starts += 1
        log.info("kernel started (pid %d, start %d)", self.proc.pid, self.starts)
        deadline = time.monotonic() + timeout
        pending = list(CHANNELS)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the kernel exited at start (code "
                                   f"{self.proc.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the kernel did not listen within {timeout:g} s")
            try:
                with socket.create_connection(("127.0.0.1", self.port(pending[0])), 1.0):
                    pending.pop(0)
            except OSError:
                time.sleep(0.05)

    def exit_code(self) -> int | None:
        """None while the kernel runs; its exit code once it ended (or never started)."""
        if self.proc is None:
            return -1
        return self.proc.poll()

    def interrupt(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self._interrupt is not None:
            self._interrupt.fire()
        else:
            os.kill(self.proc.pid, signal.SIGINT)

    def stop(self, grace: float = 3.0) -> int | None:
        """End the kernel (and what it started in its group): SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
                proc.wait(10)
        if os.name != "nt":
            # children the kernel left in its group (a subprocess of a cell) go too
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        return proc.returncode

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(OSError):
            if os.name == "nt":
                self.proc.terminate()
            else:
                os.killpg(self.proc.pid, sig)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.folder, KERNEL_LOG), encoding="utf-8",
                      errors="replace") as handle:
                return "".join(handle.readlines()[-lines:]).strip()
        except OSError:
            return ""


class Control:
    """The control endpoint (see the module docstring) for one :class:`KernelProcess`.

    ``on_shutdown()`` is called when the lab asks to end the session. ``last_contact`` is
    the monotonic time of the last authenticated request (the lease).
    """

    def __init__(self, kernel: KernelProcess, base_url: str, token: str, on_shutdown):
        self.kernel = kernel
        self.base_url = base_url
        self.token = token
        self.on_shutdown = on_shutdown
        self.last_contact = time.monotonic()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._busy = asyncio.Lock()
        self._splices: set = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        for writer in list(self._splices):
            writer.close()

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() not in ("token", "bearer"):
            return False
        a = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(a, hashlib.sha256(self.token.encode()).digest())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                method, path, headers = head
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(min(length, 1 << 20))
                if not self._authorized(headers):
                    _answer(writer, 403, {"message": "this session's token is required"})
                    await writer.drain()
                    continue
                self.last_contact = time.monotonic()
                path = path.split("?", 1)[0]
                if not path.startswith(self.base_url):
                    _answer(writer, 404, {"message": f"no such path {path[:100]}"})
                    await writer.drain()
                    continue
                route = path[len(self.base_url):]
                if route.startswith("ports/") and headers.get("upgrade", "").lower() == \
                        "websocket":
                    await self._splice(route[len("ports/"):], headers, reader, writer)
                    return
                status, body = await self._call(method, route)
                _answer(writer, status, body)
                await writer.drain()
                if "close" in headers.get("connection", "").lower():
                    return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _call(self, method: str, route: str) -> tuple[int, dict]:
        kernel = self.kernel
        if route == "api/status" and method in ("GET", "HEAD"):
            return 200, self.status()
        if method != "POST":
            return 404, {"message": f"no such endpoint {method} {route[:100]}"}
        loop = asyncio.get_event_loop()
        if route == "api/kernel/interrupt":
            kernel.interrupt()
            log.info("kernel interrupted")
            return 200, self.status()
        if route in ("api/kernel/restart", "api/kernel/kill"):
            async with self._busy:
                await loop.run_in_executor(None, kernel.stop)
                if route.endswith("restart"):
                    log.info("restarting the kernel")
                    try:
                        await loop.run_in_executor(None, kernel.start)
                    except RuntimeError as exc:
                        return 500, {"message": str(exc)}
                else:
                    log.info("kernel killed at the lab's request")
            return 200, self.status()
        if route == "api/kernel/shutdown":
            self.on_shutdown()
            return 202, self.status()
        return 404, {"message": f"no such endpoint {method} {route[:100]}"}

    def status(self) -> dict:
        code = self.kernel.exit_code()
        return {"kernel": "alive" if code is None else "dead", "exit_code": code,
                "starts": self.kernel.starts, "hostname": socket.gethostname(),
                "pid": os.getpid(), "cwd": self.kernel.cwd,
                "key": self.kernel.connection["key"],
                "signature_scheme": self.kernel.connection["signature_scheme"],
                "channels": list(CHANNELS),
                "log": self.kernel.log_tail() if code is not None else ""}

    async def _splice(self, channel: str, headers: dict[str, str],
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if channel not in CHANNELS:
            _answer(writer, 404, {"message": f"no kernel channel {channel[:20]!r}"})
            await writer.drain()
            return
        deadline = time.monotonic() + 60.0
        while True:
            try:
                k_reader, k_writer = await asyncio.open_connection("127.0.0.1",
                                                                   self.kernel.port(channel))
                break
            except OSError as exc:
                # a kernel being restarted listens again in a moment: hold the request
                # (ZMQ would only retry) rather than fail it
                if not self._busy.locked() or time.monotonic() > deadline:
                    _answer(writer, 502, {"message": f"the kernel's {channel} port: {exc}"})
                    await writer.drain()
                    return
                await asyncio.sleep(0.05)
        _nodelay(writer)
        _nodelay(k_writer)
        accept = base64.b64encode(hashlib.sha1(
            (headers.get("sec-websocket-key", "") + _WS_GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                     .encode("latin-1"))
        self._splices.add(writer)
        try:
            await asyncio.gather(_pump(reader, k_writer), _pump(k_reader, writer))
        finally:
            self._splices.discard(writer)
            k_writer.close()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until either side closes."""
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            if writer.transport.get_write_buffer_size() > _CHUNK:
                await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
        writer.close()


async def _read_head(reader: asyncio.StreamReader):
    """``(method, path, headers)`` of the next request; None at the end of the stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too long") from None
    if len(raw) > _MAX_HEAD:
        raise ValueError("request head too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _answer(writer: asyncio.StreamWriter, status: int, body: dict) -> None:
    data = json.dumps(body).encode("utf-8")
    reason = {200: "OK", 202: "Accepted", 403: "Forbidden", 404: "Not Found",
              500: "Internal Server Error", 502: "Bad Gateway"}.get(status, "OK")
    writer.write((f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n")
                 .encode("latin-1") + data)


async def watch_lease(control: Control, lease: float, stop) -> None:
    """Call ``stop(detail)`` once the lab has not checked in for ``lease`` seconds."""
    if lease <= 0:
        await asyncio.Event().wait()
    while True:
        await asyncio.sleep(min(5.0, max(0.5, lease / 10.0)))
        quiet = time.monotonic() - control.last_contact
        if quiet >= lease:
            stop(f"the lab has not checked in for {quiet:.0f} s (lease {lease:g} s)")
            return
