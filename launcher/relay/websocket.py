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
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from tornado import web, websocket
from tornado.ioloop import IOLoop

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
