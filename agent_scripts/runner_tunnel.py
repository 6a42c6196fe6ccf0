"""Keep the SSH tunnel to the relay open, with asyncssh (when the resource has no usable
OpenSSH client: see :mod:`runner_openssh`).

With its :class:`runner_relay.Grant`, the runner asks the relay's SSH server for exactly its
granted remote forward, pointing at JupyterLab on loopback, trusting only the relay's pinned
host key, and keeps the connection alive, reconnecting with backoff. A refused login or
forward means the relay ended the session: the runner stops.

Python >= 3.8; needs asyncssh (the bootstrap provides it).
"""

from __future__ import annotations

import asyncio
import logging

import asyncssh

from runner_reconnect import ReconnectingTunnel
from runner_relay import Grant, SessionEnded, SessionKey
from runner_websocket import Route, socket_through

log = logging.getLogger("session_runner.tunnel")

# AES-GCM first: with AES instructions it moves ~1.5x the bytes of chacha20-poly1305 through
# asyncssh (benchmarks/launch.py); the rest stay as fallbacks. Never compress: notebooks'
# traffic is small or already compressed, and zlib would cost more than it saves here.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr"]


class Tunnel(ReconnectingTunnel):
    """The runner's side of the relay tunnel.

    :meth:`run` connects, asks for the granted forward to ``127.0.0.1:local_port`` and stays
    connected; when the connection drops it reconnects with exponential backoff and jitter
    (first retry after ``min_delay``); ``route`` says, before each try, whether to dial the
    SSH port or go through the relay's WebSocket. It returns only when :meth:`close` is called, and
    raises :class:`SessionEnded` when the relay refuses the key or the forward.
    ``connects``/``disconnects`` count what happened, for the summary. ``hub_port``
    (hub mode): also listen on ``127.0.0.1:hub_port`` and forward it to the grant's hub API
    address through the same connection.
    """

    def __init__(self, grant: Grant, key: SessionKey, local_port: int, route: Route,
                 min_delay: float = 0.2, max_delay: float = 10.0,
                 hub_port: int | None = None):
        super().__init__(min_delay, max_delay)
        self.grant = grant
        self.route = route
        self.key = asyncssh.import_private_key(key.private_openssh)
        self.host_key = asyncssh.import_public_key(grant.host_key)
        self.local_port = local_port
        self.hub_port = hub_port
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listener: asyncssh.SSHListener | None = None

    async def _connect_once(self) -> bool:
        try:
            await self._connection()
        except asyncssh.PermissionDenied:
            raise SessionEnded("the relay no longer accepts this session's key") from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            log.warning("tunnel: %s", exc or type(exc).__name__)
        return True

    async def _connection(self) -> None:
        g = self.grant
        sock = None
        if await self.route.pick() == "websocket":
            sock = await socket_through(self.route.websocket_url)
        conn = await asyncssh.connect(
            g.ssh_host, g.ssh_port, sock=sock, username=g.username, client_keys=[self.key],
            known_hosts=([self.host_key], [], []), config=None, agent_path=None,
            preferred_auth="publickey", keepalive_interval=10, keepalive_count_max=3,
            connect_timeout=15, encryption_algs=CIPHERS, compression_algs=None)
        self._conn = conn
        try:
            try:
                self._listener = await conn.forward_remote_port(
                    g.listen_host, g.listen_port, "127.0.0.1", self.local_port)
            except asyncssh.ChannelListenError as exc:
                raise SessionEnded(f"the relay refused the forward: {exc}") from None
            if self.hub_port is not None and g.hub_api is not None:
                await conn.forward_local_port("127.0.0.1", self.hub_port, *g.hub_api)
            self.connects += 1
            log.info("tunnel up: %s:%d on the relay -> 127.0.0.1:%d", g.listen_host,
                     g.listen_port, self.local_port)
            await conn.wait_closed()
        finally:
            conn.close()
            self._conn = self._listener = None

    async def close(self) -> None:
        """Stop reconnecting; withdraw the forward (telling the relay the session is over,
        not merely disconnected), then close the connection."""
        await super().close()
        conn, listener = self._conn, self._listener
        if listener is not None:
            listener.close()  # sends cancel-tcpip-forward
            try:
                await asyncio.wait_for(listener.wait_closed(), 2.0)
            except (asyncio.TimeoutError, asyncssh.Error, OSError):
                pass
        if conn is not None:
            conn.close()
