"""The kernel's five ports on this machine, each bridged to the kernel's own through the relay.

jupyter_server's kernel manager connects ZMQ sockets to ``127.0.0.1:<port>``; each TCP
connection it opens to one of our listeners becomes one request to the relay,
``GET /session/<id>/ports/<channel>`` with ``Upgrade: websocket`` and the session's token.
The relay's proxy carries it through the runner's tunnel to the runner's control endpoint,
which answers ``101`` and from then on the connection is the kernel's port byte for byte
(``agent_scripts/runner_kernel.py``). ZMQ reconnects by itself when a connection drops (a
relay restart, a tunnel reconnect), and each reconnect is a fresh request.

The listeners outlive any one job: :meth:`PortBridge.retarget` points them at another
session (a kernel restarted in a new job keeps its local ports).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import socket
import ssl
import urllib.parse
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHANNELS = ("shell", "iopub", "stdin", "hb", "control")
_AFTER_IOPUB = ("shell",)
_IOPUB_WAIT = 30.0  # seconds a request channel waits for iopub before going anyway
_SUBSCRIBE_GRACE = 0.2  # for the subscription to reach a kernel on a busy machine
_CHUNK = 1 << 16


@dataclass
class Target:
    """Where the kernel is: the session's address at the relay (``.../session/<id>/``) and
    the token its runner checks."""

    base: str
    token: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        """From a session URL as the relay gives it (``<base><default_url>?token=...``)."""
        parts = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
        path = parts.path if parts.path.endswith("/") else parts.path.rsplit("/", 1)[0] + "/"
        return cls(urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), token)


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if bundle and os.path.isfile(bundle):
        context.load_verify_locations(bundle)
    return context


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            if writer.transport.get_write_buffer_size() > _CHUNK:
                await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class PortBridge:
    """Five listeners on 127.0.0.1 (:attr:`ports`, channel -> port), bridged to ``target``.

    ``await start(ports)`` binds (the given ports, else free ones); ``await close()`` stops
    listening and cuts every bridged connection.
    """

    def __init__(self, target: Target):
        self.target = target
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._open: set[asyncio.StreamWriter] = set()
        self.failures = 0  # connections the relay refused or dropped before 101
        self._iopub = 0  # iopub connections bridged right now
        self._iopub_up = asyncio.Event()

    def retarget(self, target: Target) -> None:
        """Bridge new connections to ``target``; cut the ones to the old one."""
        self.target = target
        self.cut()

    def cut(self) -> None:
        """Close every bridged connection (ZMQ reconnects through a fresh one)."""
        for writer in list(self._open):
            writer.close()

    async def start(self, ports: dict[str, int] | None = None) -> dict[str, int]:
        for channel in CHANNELS:
            server = await asyncio.start_server(
                lambda r, w, c=channel: self._bridge(c, r, w), "127.0.0.1",
                (ports or {}).get(channel, 0))
            self._servers.append(server)
            self.ports[channel] = server.sockets[0].getsockname()[1]
        return dict(self.ports)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.cut()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers = []

    def _iopub_set(self) -> None:
        if self._iopub:
            self._iopub_up.set()

    async def _bridge(self, channel: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if channel in _AFTER_IOPUB:
            # a request that reaches the kernel before the lab's iopub subscription would
            # have its output published to no one (after a relay restart every channel
            # reconnects at once): let iopub go first
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._iopub_up.wait(), _IOPUB_WAIT)
        target = self.target
        parts = urllib.parse.urlsplit(target.base)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        self._open.add(writer)
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                parts.hostname, port, ssl=_ssl_context() if secure else None), 30)
            self._open.add(up_writer)
            _nodelay(writer)
            _nodelay(up_writer)
            key = base64.b64encode(secrets.token_bytes(16)).decode()
            up_writer.write((
                f"GET {parts.path}ports/{channel} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\nAuthorization: token {target.token}\r\n\r\n"
            ).encode("latin-1"))
            head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), 60)
            status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if status != b"101":
                self.failures += 1
                # a kernel being restarted, a tunnel reconnecting: ZMQ dials again
                log.debug("kernel port %s: the relay answered %s", channel,
                            head.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:200])
                return
            if channel == "iopub":
                self._iopub += 1
                # the subscription goes out as soon as the connection is up; a moment
                # for it to reach the kernel
                asyncio.get_running_loop().call_later(_SUBSCRIBE_GRACE, self._iopub_set)
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                if channel == "iopub":
                    self._iopub -= 1
                    if not self._iopub:
                        self._iopub_up.clear()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            self.failures += 1
            log.debug("kernel port %s: bridge to the relay failed (%s)", channel,
                      exc or type(exc).__name__)
        finally:
            writer.close()
            self._open.discard(writer)
            if up_writer is not None:
                up_writer.close()
                self._open.discard(up_writer)
