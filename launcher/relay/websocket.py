"""The relay's second entrance to its SSH server: SSH carried in a WebSocket on the API port.

Networks that let only HTTP(S) out (Binder, many university and company networks) cannot
reach the relay's SSH port. A runner there opens ``GET /api/tunnel`` on the relay's HTTP(S)
port as a WebSocket and speaks SSH inside it, each binary message a slice of the byte stream.

Nothing about who may do what changes: :class:`WebSocketEntrance` hands each WebSocket to an
SSH acceptor built with the same :class:`launcher.relay.ssh.RelaySSHServer` factory, host key
and options as the SSH port's (asyncssh's ``tunnel=`` hook), so the same key pinning, the one
forward per session and every refusal apply. TLS, when the relay has a certificate, is the
API's; the SSH host key is pinned inside either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado import websocket

log = logging.getLogger(__name__)

PATH = "/api/tunnel"
"""Where runners open the WebSocket, on the relay's API port."""


class _MessageTransport(asyncio.Transport):
    """An asyncio transport for asyncssh whose bytes go out as WebSocket binary messages."""

    def __init__(self, handler: TunnelHandler):
        super().__init__()
        self._handler = handler
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        request = self._handler.request
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
            self._handler.write_message(bytes(data), binary=True)
        except websocket.WebSocketClosedError:
            self._closing = True

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._handler.close()

    def abort(self) -> None:
        self.close()


class TunnelHandler(websocket.WebSocketHandler):
    """One runner's WebSocket: its messages feed an SSH server connection, and back."""

    def initialize(self, entrance: WebSocketEntrance) -> None:
        self.entrance = entrance
        self._protocol: asyncio.Protocol | None = None
        self._transport: _MessageTransport | None = None

    def open(self) -> None:
        factory = self.entrance.factory
        if factory is None:  # the relay is stopping
            self.close(1013, "the relay is not accepting tunnels")
            return
        self.set_nodelay(True)
        self._transport = _MessageTransport(self)
        self._protocol = factory("", 0)
        self._protocol.connection_made(self._transport)
        log.debug("tunnel WebSocket opened from %s", self.request.remote_ip)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.close(1003, "SSH travels in binary messages")
            return
        if self._protocol is not None:
            self._protocol.data_received(message)

    def on_close(self) -> None:
        if self._transport is not None:
            self._transport._closing = True
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(None)


class WebSocketEntrance:
    """What asyncssh's ``tunnel=`` takes for a listener: it is given the factory of SSH
    server connections once (``create_server``), and :class:`TunnelHandler` calls it for
    every WebSocket that opens."""

    def __init__(self) -> None:
        self.factory: Callable[[str, int], asyncio.Protocol] | None = None

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
