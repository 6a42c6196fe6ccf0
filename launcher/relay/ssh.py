"""The relay's SSH side: who may connect, what they may ask, and how users reach them.

A session runner logs in as its session id with the key it enrolled when it redeemed its
ticket; no other key, no password, no keyboard-interactive. Once in, it may ask for exactly
one thing: the remote forward (``tcpip-forward``) it was granted — and, for a session
in hub mode on a relay configured with a hub API address, outbound opens (``direct-tcpip``)
to exactly that address, which is how a server behind NAT reaches its JupyterHub; and for a
session with a workspace, the ``sftp`` subsystem onto that workspace alone
(:mod:`launcher.relay.sftp`), also for a short while after the session ended so its final
save can land. Shells, commands, other subsystems, any other outbound open, UNIX sockets,
agent and X11 forwarding are all refused.

The forward is virtual: the relay binds no port for it. The relay's HTTP port serves the
session (:mod:`launcher.relay.proxy`) by opening ``forwarded-tcpip`` channels on whichever
SSH connection currently holds the session's route (:class:`RouteTable`). When the runner
reconnects it asks for the same forward again; a user request that arrives while the route
is down waits up to ``hold`` seconds for it instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import asyncssh

from launcher.relay.sftp import SFTPGrant, sftp_session

log = logging.getLogger(__name__)


class SSHPermit(NamedTuple):
    """What one enrolled session may do over SSH: log in with ``public_key``, ask for
    the forward of ``listen_host:listen_port`` (only when ``forward``: the session is live),
    (hub mode) open ``hub_api``, and open the ``sftp`` subsystem onto its workspace when
    ``sftp`` gives a grant for it (:mod:`launcher.relay.sftp`)."""

    public_key: str
    listen_host: str
    listen_port: int
    hub_api: tuple[str, int] | None = None
    forward: bool = True
    sftp: Callable[[], SFTPGrant | None] | None = None


class RouteClaim(asyncssh.SSHListener):
    """What asyncssh keeps for a granted forward. asyncssh closes it when the runner cancels
    the forward or when the connection is lost; either way the route is withdrawn."""

    def __init__(self, routes: RouteTable, session_id: str, conn: asyncssh.SSHServerConnection,
                 port: int, server: RelaySSHServer):
        super().__init__()
        self._routes = routes
        self.session_id = session_id
        self.conn = conn
        self.server = server
        self._port = port

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        self._routes.withdraw(self)

    async def wait_closed(self) -> None:
        return None


class RouteTable:
    """Which SSH connection carries each session right now.

    ``on_up(session_id)`` is called when a route appears; ``on_down(session_id, withdrawn)``
    when it goes away — ``withdrawn`` is True when the runner cancelled its forward on a
    live connection (it is stopping for good), False when the connection was lost. A newer
    connection of the same session replacing an older one calls neither.
    """

    def __init__(self, on_up: Callable[[str], None], on_down: Callable[[str, bool], None]):
        self._claims: dict[str, RouteClaim] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._on_up = on_up
        self._on_down = on_down

    def claim(self, session_id: str, conn: asyncssh.SSHServerConnection, port: int,
              server: RelaySSHServer) -> RouteClaim:
        """Route the session through ``conn``; an older connection of it is closed."""
        old = self._claims.get(session_id)
        claim = RouteClaim(self, session_id, conn, port, server)
        self._claims[session_id] = claim
        if old is not None and old.conn is not conn:
            log.info("session %s reconnected; closing its older connection", session_id)
            old.conn.close()
        self._event(session_id).set()
        self._on_up(session_id)
        return claim

    def withdraw(self, claim: RouteClaim) -> None:
        if self._claims.get(claim.session_id) is not claim:
            return
        del self._claims[claim.session_id]
        self._event(claim.session_id).clear()
        # asyncssh closes listeners just before it reports the connection lost: decide
        # "cancelled on a live connection" vs "connection lost" once that has happened
        asyncio.get_running_loop().call_soon(
            lambda: self._on_down(claim.session_id, not claim.server.lost))

    def drop(self, session_id: str) -> None:
        """Forget the session's route and close its connection (the session ended)."""
        claim = self._claims.pop(session_id, None)
        self._waiters.pop(session_id, None)
        if claim is not None:
            claim.conn.close()

    def current(self, session_id: str) -> asyncssh.SSHServerConnection | None:
        claim = self._claims.get(session_id)
        return claim.conn if claim else None

    def _event(self, session_id: str) -> asyncio.Event:
        return self._waiters.setdefault(session_id, asyncio.Event())

    async def wait(self, session_id: str, timeout: float) -> asyncssh.SSHServerConnection | None:
        """The session's connection, waiting up to ``timeout`` seconds for one to appear."""
        conn = self.current(session_id)
        if conn is not None or timeout <= 0:
            return conn
        try:
            await asyncio.wait_for(self._event(session_id).wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return self.current(session_id)


class RelaySSHServer(asyncssh.SSHServer):
    """One runner's SSH connection: public-key login as its session, one forward, nothing else.

    ``lookup(session_id)`` returns the :class:`SSHPermit` of a live enrolled session or
    ``None``.
    """

    def __init__(self, lookup: Callable[[str], SSHPermit | None],
                 routes: RouteTable):
        self._lookup = lookup
        self._routes = routes
        self._conn: asyncssh.SSHServerConnection | None = None
        self._session_id = ""
        self._peer = "?"
        self.lost = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self._peer = f"{peer[0]}:{peer[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._session_id:
            log.info("session %s: SSH connection from %s closed (%s)", self._session_id,
                     self._peer, exc or "normally")

    def begin_auth(self, username: str) -> bool:
        self._session_id = username
        return True  # always authenticate; there is no anonymous access

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        found = self._lookup(username)
        offered = key.export_public_key("openssh").decode("ascii").split()[:2]
        ok = found is not None and found.public_key.split()[:2] == offered
        if not ok:
            log.warning("SSH login as %r from %s refused: key not enrolled for a live session",
                        username[:40], self._peer)
        return ok

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        found = self._lookup(self._session_id)
        if found is None or not found.forward or (listen_host, listen_port) != (
                found.listen_host, found.listen_port):
            log.warning("session %s asked to listen on %s:%s: refused", self._session_id,
                        listen_host, listen_port)
            return False
        assert self._conn is not None
        return self._routes.claim(self._session_id, self._conn, listen_port, self)

    def session_requested(self) -> Any:
        found = self._lookup(self._session_id)
        grant = found.sftp() if found is not None and found.sftp is not None else None
        if grant is None:
            log.warning("session %s asked for a session channel (shell, command or "
                        "subsystem) without a workspace: refused", self._session_id)
            return False
        return sftp_session(grant)  # the sftp subsystem only; shells and commands refused

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> bool:
        found = self._lookup(self._session_id)
        if found is not None and found.hub_api is not None and \
                (dest_host, dest_port) == found.hub_api:
            return True  # asyncssh opens the hub's API address and splices the channel
        log.warning("session %s asked to open %s:%s: refused", self._session_id, dest_host,
                    dest_port)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False
