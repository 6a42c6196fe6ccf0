"""The relay's second entrance to its SSH server: SSH carried in a WebSocket on the API port.

Networks that let only HTTP(S) out (Binder, many university and company networks) cannot
reach the relay's SSH port. A runner there opens ``GET /api/tunnel`` on the relay's HTTP(S)
port as a WebSocket and speaks SSH inside it, each binary message a slice of the byte stream.

Before the runner has logged in, a WebSocket costs the relay a descriptor and memory for
nothing: at most ``tunnel_preauth_per_address`` of them per address and
``tunnel_preauth_limit`` in all are open at once (more get 429, and their connection is
closed), and each must log in within ``tunnel_preauth_timeout`` seconds or is closed.

Nothing about who may do what changes: :class:`WebSocketEntrance` hands each WebSocket to an
SSH acceptor built with the same :class:`launcher.relay.ssh.RelaySSHServer` factory, host key
and options as the SSH port's (asyncssh's ``tunnel=`` hook), so the same key pinning, the one
forward per session and every refusal apply. TLS, when the relay has a certificate, is the
API's; the SSH host key is pinned inside either way.

The bytes take a short way: tornado does the handshake, close and pings, and a reading loop
of this module (:class:`_TunnelProtocol`) hands binary payload to the SSH connection as it
arrives, in slices, without assembling messages (benchmarks/tunnel_route.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from tornado import web, websocket
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

try:  # tornado's C unmasking, which its own WebSocket uses when it was built with it
    from tornado.speedups import websocket_mask as _unmask
except ImportError:  # pragma: no cover - depends on how tornado was installed
    def _unmask(mask: bytes, data: bytes) -> bytes:
        n = len(data)
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")

log = logging.getLogger(__name__)

PATH = "/api/tunnel"
"""Where runners open the WebSocket, on the relay's API port."""

AUTHENTICATED = "relay_tunnel_authenticated"
"""The transport's extra info naming what to call once the runner has logged in (the SSH
server calls it from ``auth_completed``; see :class:`launcher.relay.service.Relay`)."""

FEED = 64 << 10
"""The most bytes handed to the SSH connection at once. asyncssh copies what is left of its
input buffer after each packet it parses, so one 1 MiB message of 32 KiB packets costs ~32 MiB
of copying; 64 KiB slices keep it near two copies per byte, whether the runner's SSH client
sends 32 KiB packets (OpenSSH) or 256 KiB ones (asyncssh)."""

READ = 1 << 20
"""The most bytes one read from a runner's connection takes while bytes stream in."""

QUIET = 16 << 10
"""The read buffer of a connection that is not streaming (an idle session's keepalives), so
idle tunnels hold 16 KiB each, not :data:`READ`."""


class _MessageTransport(asyncio.Transport):
    """An asyncio transport for asyncssh whose bytes go out as WebSocket binary messages."""

    def __init__(self, handler: TunnelHandler):
        super().__init__()
        self._handler = handler
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        request = self._handler.request
        if name == AUTHENTICATED:
            return self._handler.authenticated
        if name == "peername":
            return (request.remote_ip, 0)
        if name == "sockname":
            host, _, port = request.host.rpartition(":")
            return (host or request.host, int(port) if port.isdigit() else 0)
        return default

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._handler.send(bytes(data))
        except (websocket.WebSocketClosedError, StreamClosedError):
            self._closing = True

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._handler.close()

    def abort(self) -> None:
        self.close()


class _Broken(Exception):
    """The runner's side broke RFC 6455: the connection is dropped."""


class _TunnelProtocol(websocket.WebSocketProtocol13):
    """tornado's WebSocket (its handshake, close and ping handling) with a reading loop made
    for a byte stream: each read takes up to :data:`READ` bytes straight into one buffer,
    and the payload of binary frames goes to the SSH connection as it arrives, unmasked
    :data:`FEED` bytes at a time, without waiting for — or ever holding — a whole message.
    Data frames are binary only (a text frame is answered with close 1003), from the client
    always masked, no extension bits; anything else drops the connection."""

    def send_binary(self, data: bytes) -> None:
        """``data`` as one binary message (unmasked: the server's side). Raises
        :class:`StreamClosedError` once the connection is gone."""
        if self.server_terminated:  # nothing may follow our close frame
            return
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x82, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x82, 126, n)
        else:
            head = struct.pack("!BBQ", 0x82, 127, n)
        self.stream.write(head + data)

    @staticmethod
    def _head(buf: memoryview, start: int, end: int) -> tuple[int, int, int, bytes] | None:
        """The frame head at ``buf[start:end]``: (its length, the first byte, the payload
        length, the mask), or None while incomplete; raises :class:`_Broken`."""
        if end - start < 2:
            return None
        first, second = buf[start], buf[start + 1]
        if first & 0x70 or not second & 0x80:  # extension bits; an unmasked client frame
            raise _Broken
        size = second & 0x7F
        at = start + 2
        if size == 126:
            if end - at < 2:
                return None
            size = int.from_bytes(buf[at:at + 2], "big")
            at += 2
        elif size == 127:
            if end - at < 8:
                return None
            size = int.from_bytes(buf[at:at + 8], "big")
            if size >> 63:
                raise _Broken
            at += 8
        if end - at < 4:
            return None
        if first & 0x08 and (size > 125 or not first & 0x80):  # control frames: short, whole
            raise _Broken
        return at + 4 - start, first, size, bytes(buf[at:at + 4])

    async def _receive_frame_loop(self) -> None:
        handler = self.handler
        buf = bytearray(QUIET)
        view = memoryview(buf)
        start = end = 0  # buf[start:end]: received, not yet used
        left = 0  # payload bytes of the current data frame still to come
        mask = b""
        offset = 0  # payload bytes of the current data frame already used
        keep = False  # the current data frame's payload goes to SSH (not discarded)
        fragmented = False  # inside a binary message sent as several frames
        read = last = 0
        try:
            while not self.client_terminated:
                if left and end > start:
                    k = min(left, end - start, FEED)
                    if keep:
                        turn = offset % 4
                        data = _unmask(mask[turn:] + mask[:turn], bytes(view[start:start + k]))
                        handler.feed(data)
                    start += k
                    offset += k
                    left -= k
                    continue
                if not left:
                    head = self._head(view, start, end)
                    if head is not None:
                        used, first, size, mask = head
                        opcode = first & 0x0F
                        if first & 0x08:  # close, ping, pong: tornado answers as it does
                            if end - start < used + size:
                                head = None  # its payload is still coming
                            else:
                                payload = bytes(view[start + used:start + used + size])
                                start += used + size
                                done = self._handle_message(opcode, _unmask(mask, payload))
                                if done is not None:
                                    await done
                                continue
                        else:
                            if opcode == 0x0:
                                if not fragmented:
                                    raise _Broken
                            elif opcode in (0x1, 0x2):
                                if fragmented:
                                    raise _Broken
                                keep = opcode == 0x2 and not self.server_terminated
                                if opcode == 0x1:
                                    handler.close(1003, "SSH travels in binary messages")
                            else:
                                raise _Broken
                            fragmented = not first & 0x80
                            start += used
                            left, offset = size, 0
                            continue
                if start == end:
                    start = end = 0
                    if len(buf) > QUIET and last < QUIET:  # quiet again: the big buffer goes
                        buf = bytearray(QUIET)
                        view = memoryview(buf)
                elif len(buf) - end < len(buf) // 2:  # a partial frame head: to the front
                    view[:end - start] = view[start:end]
                    start, end = 0, end - start
                last = await self.stream.read_into(view[end:], partial=True)
                end += last
                read += last
                if end == len(buf) < READ:  # busy: read up to READ at once from now on
                    bigger = bytearray(READ)
                    bigger[:end - start] = view[start:end]
                    buf, view = bigger, memoryview(bigger)
                    start, end = 0, end - start
                if read >= READ:  # let other connections' work run now and then
                    read = 0
                    await asyncio.sleep(0)
        except _Broken:
            log.info("tunnel WebSocket from %s dropped: it broke RFC 6455",
                     handler.request.remote_ip)
            self._abort()
        except StreamClosedError:
            self._abort()
        finally:
            handler.on_ws_connection_close(self.close_code, self.close_reason)


class TunnelHandler(websocket.WebSocketHandler):
    """One runner's WebSocket: its messages feed an SSH server connection, and back."""

    def initialize(self, entrance: WebSocketEntrance) -> None:
        self.entrance = entrance
        self._protocol: asyncio.Protocol | None = None
        self._transport: _MessageTransport | None = None
        self._pending = False  # counted as not logged in yet
        self._deadline: object | None = None

    def prepare(self) -> None:
        refusal = self.entrance.refusal(self.request.remote_ip or "")
        if refusal:
            log.info("tunnel WebSocket refused from %s: %s", self.request.remote_ip, refusal)
            # the connection ends with the answer: a refused client keeps no descriptor
            self.set_header("Connection", "close")
            connection = self.request.connection
            if hasattr(connection, "_disconnect_on_finish"):
                connection._disconnect_on_finish = True
            raise web.HTTPError(429, refusal)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message \
            else self._reason
        self.set_header("Content-Type", "application/json")
        if status_code == 429:
            self.set_header("Retry-After", str(max(1, round(self.entrance.timeout))))
        self.finish(json.dumps({"message": message}))

    def open(self) -> None:
        factory = self.entrance.factory
        if factory is None:  # the relay is stopping
            self.close(1013, "the relay is not accepting tunnels")
            return
        self.set_nodelay(True)
        self._pending = True
        self.entrance.enter(self.request.remote_ip or "")
        self._deadline = IOLoop.current().call_later(self.entrance.timeout, self._too_slow)
        self._transport = _MessageTransport(self)
        self._protocol = factory("", 0)
        self._protocol.connection_made(self._transport)
        log.debug("tunnel WebSocket opened from %s", self.request.remote_ip)

    def authenticated(self) -> None:
        """The runner logged in: no longer counted or timed as a stranger."""
        self._leave()

    def _too_slow(self) -> None:
        self._deadline = None
        if self._pending:
            log.info("tunnel WebSocket from %s closed: no login within %.0f s",
                     self.request.remote_ip, self.entrance.timeout)
            self.close(1008, "no SSH login in time")
            self.on_close()

    def _leave(self) -> None:
        if self._deadline is not None:
            IOLoop.current().remove_timeout(self._deadline)
            self._deadline = None
        if self._pending:
            self._pending = False
            self.entrance.leave(self.request.remote_ip or "")

    def get_websocket_protocol(self) -> websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if type(protocol) is websocket.WebSocketProtocol13:
            protocol.__class__ = _TunnelProtocol  # tornado's, with the stream's reading loop
        return protocol

    def feed(self, data: bytes) -> None:
        """Bytes of the SSH stream, from the runner."""
        if self._protocol is not None:
            self._protocol.data_received(data)

    def send(self, data: bytes) -> None:
        """Bytes of the SSH stream, to the runner."""
        connection = self.ws_connection
        if isinstance(connection, _TunnelProtocol):
            connection.send_binary(data)
        else:
            self.write_message(data, binary=True)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.close(1003, "SSH travels in binary messages")
            return
        if len(message) <= FEED:
            if self._protocol is not None:
                self._protocol.data_received(message)
            return
        view = memoryview(message)
        for start in range(0, len(view), FEED):
            if self._protocol is None:  # the SSH connection ended on what it was given
                return
            self._protocol.data_received(view[start:start + FEED])

    def on_close(self) -> None:
        self._leave()
        if self._transport is not None:
            self._transport._closing = True
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(None)


class WebSocketEntrance:
    """What asyncssh's ``tunnel=`` takes for a listener: it is given the factory of SSH
    server connections once (``create_server``), and :class:`TunnelHandler` calls it for
    every WebSocket that opens."""

    def __init__(self, per_address: int = 16, limit: int = 256, timeout: float = 15.0) -> None:
        self.factory: Callable[[str, int], asyncio.Protocol] | None = None
        self.per_address = per_address
        self.limit = limit
        self.timeout = timeout
        self._pending: Counter[str] = Counter()

    def refusal(self, address: str) -> str | None:
        """Why a new WebSocket from ``address`` is refused now, or None."""
        if self._pending[address] >= self.per_address:
            return (f"{self.per_address} tunnels from this address have not logged in yet; "
                    "retry later")
        if sum(self._pending.values()) >= self.limit:
            return f"{self.limit} tunnels have not logged in yet; retry later"
        return None

    def enter(self, address: str) -> None:
        self._pending[address] += 1

    def leave(self, address: str) -> None:
        self._pending[address] -= 1
        if self._pending[address] <= 0:
            del self._pending[address]

    async def create_server(self, factory: Callable[[str, int], asyncio.Protocol],
                            listen_host: str, listen_port: int) -> WebSocketEntrance:
        self.factory = factory
        return self

    def get_port(self) -> int:
        return 0

    def close(self) -> None:
        """Stop taking new WebSockets (open ones end with their SSH connections)."""
        self.factory = None

    async def wait_closed(self) -> None:
        return None
