"""The relay: the rendezvous between a session's job and its user, and the tunnel's far end.

Everest gives a running job no way to publish a URL, so the relay does it (see
``docs/architecture.md``). It runs, in one asyncio process:

- an HTTP(S) server (tornado) on ONE port, with the API (:mod:`launcher.relay.api`) where a
  user, authenticated by an Everest token (:mod:`launcher.relay.auth`), mints a session with
  a one-time ticket, follows its state, and ends it; where a session runner redeems its
  ticket with a fresh public key; a small page for users of the Everest web form; and every
  session under ``/session/<id>/`` (:mod:`launcher.relay.proxy`), so one certificate and one
  firewall rule cover them all;
- an SSH server (asyncssh, :mod:`launcher.relay.ssh`) that accepts only enrolled keys and
  only the one remote forward each key is pinned to. That forward is virtual: no port is
  bound for it; the proxy opens SSH channels to it for each user request.

State lives in SQLite (:mod:`launcher.relay.store`) under ``state_dir`` with the SSH host key
and the HTTP port last bound (reused on restart when the port is not fixed), so session URLs
stay the same across tunnel reconnects and relay restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncssh
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.netutil import bind_sockets
from traitlets import TraitError

from everest_app import config as app_config
from everest_app.config import write_private
from everest_app.listener import GuardedHTTPServer
from everest_app.options import from_options
from launcher.relay import deadlines
from launcher.relay import store as rs
from launcher.relay.auth import EverestAuth
from launcher.relay.config import RELAY_DESCRIPTION, RelayConfig, add_relay_arguments
from launcher.relay.proxy import ChannelPool
from launcher.relay.sftp import SFTPGrant
from launcher.relay.sign_in import PageSignIn
from launcher.relay.ssh import RelaySSHServer, RouteTable, SSHPermit
from launcher.relay.state import SessionState, StopReason
from launcher.relay.websocket import AUTHENTICATED, WebSocketEntrance
from launcher.relay.websocket import PATH as WEBSOCKET_PATH
from launcher.relay.workspaces import FolderWorkspaceStore, WorkspaceStore, check_name

log = logging.getLogger(__name__)

HOST_KEY_FILE = "ssh_host_ed25519_key"
SECRET_FILE = "runner_secret"
STATE_DB = "relay.sqlite"
SEAL_KEY_FILE = "state_key"
PORT_FILE = "http_port"
WORKSPACES_DIR = "workspaces"
FORWARD_PORT = 8888
"""The port number of every new session's (virtual) forward: the SSH protocol needs one,
nothing binds it, and the session id already tells sessions apart."""


def load_secret(path: Path) -> bytes:
    """The relay's HMAC key for runners' end tokens, created (0600) on first use."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    secret = secrets.token_bytes(32)
    write_private(path, secret.hex())
    return secret


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The relay's SSH host key, created (0600, atomically) on first use."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="everest-jupyter relay")
    write_private(path, key.export_private_key().decode("ascii"))
    return key


class _TunnelSSHServer(RelaySSHServer):
    """The SSH server behind the WebSocket entrance: once a runner has logged in, it tells
    its WebSocket, which then no longer counts against the pre-login limits."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self._tunnel_conn = conn

    def auth_completed(self) -> None:
        super().auth_completed()
        notify = self._tunnel_conn.get_extra_info(AUTHENTICATED)
        if notify is not None:
            notify()


class Relay:
    """A running relay (see the module docstring). ``await start()``, ``await stop()``."""

    def __init__(self, config: RelayConfig):
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.auth = EverestAuth(config.everest_url, cache_seconds=config.auth_cache)
        self.sign_in = PageSignIn(config)
        self.store: rs.RelayStore | None = None
        self.workspaces: WorkspaceStore | None = None
        self._closing: dict[str, float] = {}  # ended sessions whose final save may still come
        self.routes = RouteTable(self._route_up, self._route_down)
        self.proxy_pool = ChannelPool()
        self.host_key: asyncssh.SSHKey | None = None
        self._ssh_server: asyncssh.SSHAcceptor | None = None
        self._ws_server: asyncssh.SSHAcceptor | None = None
        self.websocket_entrance = WebSocketEntrance(
            per_address=config.tunnel_preauth_per_address,
            limit=config.tunnel_preauth_limit, timeout=config.tunnel_preauth_timeout)
        self._http_server: GuardedHTTPServer | None = None
        self._probes: dict[str, asyncio.Task] = {}
        self._probe_now: dict[str, asyncio.Event] = {}  # a probe's wake-up: "ask again now"
        self._changed: dict[str, asyncio.Event] = {}
        self._sweeper: asyncio.Task | None = None
        self._ssl: ssl.SSLContext | None = None
        self._secret = b""
        self.http_port = 0
        self.ssh_port = 0

    # -- life cycle -------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self._ssl else "http"

    @property
    def url(self) -> str:
        """The API's address on this machine."""
        host = self.config.http_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.http_port}"

    async def start(self) -> None:
        """Open the state, bind the SSH server and the HTTP(S) port."""
        from launcher.relay.app import make_app

        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        if self.config.certfile:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(self.config.certfile, self.config.keyfile)
        self.store = rs.RelayStore(self.state_dir / STATE_DB, self.state_dir / SEAL_KEY_FILE)
        self.workspaces = FolderWorkspaceStore(
            self.state_dir / WORKSPACES_DIR, quota=self.config.workspace_quota,
            max_file=self.config.workspace_max_file, history=self.config.workspace_history,
            is_live=self._workspace_held)
        self.host_key = load_host_key(self.state_dir / HOST_KEY_FILE)
        self._secret = load_secret(self.state_dir / SECRET_FILE)
        # one SSH server, two entrances: its TCP port, and WebSockets on the API port
        ssh_options = dict(
            server_host_keys=[self.host_key], agent_forwarding=False, x11_forwarding=False,
            allow_scp=False, keepalive_interval=15, keepalive_count_max=3,
            login_timeout=self.config.tunnel_preauth_timeout)
        self._ssh_server = await asyncssh.create_server(
            lambda: RelaySSHServer(self._ssh_lookup, self.routes),
            self.config.ssh_host, self.config.ssh_port, **ssh_options)
        self.ssh_port = self._ssh_server.sockets[0].getsockname()[1]
        self._ws_server = await asyncssh.create_server(
            lambda: _TunnelSSHServer(self._ssh_lookup, self.routes), "", 0,
            tunnel=self.websocket_entrance, **ssh_options)
        self.store.reset_connections()
        sockets = self._bind_http()
        self._http_server = GuardedHTTPServer(
            make_app(self), ssl_options=self._ssl, xheaders=False,
            max_body_size=self.config.max_proxied_body,
            idle_connection_timeout=self.config.http_idle_timeout)
        self._http_server.add_sockets(sockets)
        self.http_port = sockets[0].getsockname()[1]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        log.info("relay up: API %s, SSH port %d, Everest %s", self.url, self.ssh_port,
                 self.config.everest_url)
        if self.config.info_file:
            write_private(Path(self.config.info_file), json.dumps({
                "pid": os.getpid(), "url": self.url, "ssh_port": self.ssh_port,
                "everest_url": self.config.everest_url}))

    async def stop(self) -> None:
        """Close everything; the state stays on disk for the next start."""
        if self._sweeper:
            self._sweeper.cancel()
        for task in self._probes.values():
            task.cancel()
        if self._http_server:
            self._http_server.stop()
        for sid in [r.id for r in self.store.list(live_only=True)] if self.store else []:
            self.proxy_pool.drop(sid)
        for server in (self._ssh_server, self._ws_server):
            if server:
                server.close()
                await server.wait_closed()
        if self.store:
            self.store.close()
        if self.config.info_file:
            with contextlib.suppress(OSError):
                Path(self.config.info_file).unlink()

    def _bind_http(self) -> list[socket.socket]:
        """Bind the HTTP(S) port: the configured one, else the one used last time (so
        session URLs survive a restart), else any free one."""
        port_file = self.state_dir / PORT_FILE
        port = self.config.http_port
        if not port and port_file.exists():
            with contextlib.suppress(ValueError, OSError):
                try:
                    return self._remember(bind_sockets(int(port_file.read_text()),
                                                       self.config.http_host))
                except OSError as exc:
                    log.warning("port %s of the last run is taken (%s); session URLs change",
                                port_file.read_text().strip(), exc)
        return self._remember(bind_sockets(port, self.config.http_host))

    def _remember(self, sockets: list[socket.socket]) -> list[socket.socket]:
        write_private(self.state_dir / PORT_FILE, str(sockets[0].getsockname()[1]))
        return sockets

    async def _sweep(self) -> None:
        """Expire unredeemed tickets and end abandoned sessions now and then."""
        while True:
            await asyncio.sleep(2.0)  # indexed queries: cheap enough to be prompt
            for sid in self.store.expire_tickets():
                log.info("session %s: ticket expired unredeemed", sid)
                self._release(sid)
                self._close_workspace(sid)
                self._notify(sid)
            for sid, until in list(self._closing.items()):
                if until < time.time():
                    self._close_workspace(sid)
            for sid in self.store.stale(time.time() - self.config.stale_after):
                log.info("session %s: no runner for %.0f s; ending it", sid,
                         self.config.stale_after)
                self.end_session(sid)

    # -- sessions -----------------------------------------------------------------------

    async def create_session(self, owner: str, *, mode: str = "lab", label: str = "",
                             default_url: str = "/lab", ticket_ttl: float | None = None,
                             base_url: str | None = None, hub_env: dict[str, str] | None = None,
                             hub_forward: bool = False, workspace: str | None = None,
                             snapshot: str | None = None, read_only: bool = False
                             ) -> tuple[rs.SessionRecord, str]:
        """A new session of ``owner``; returns it and its ticket (valid ``ticket_ttl``
        seconds, default the relay's).

        Hub mode (``mode="hub"``): ``base_url`` is the hub's prefix for the server,
        ``hub_env`` the environment the hub gives it (handed to the runner with its grant,
        never shown by the API), ``hub_forward`` whether the runner may forward to the
        configured hub API.

        ``workspace``: the name of the owner's workspace the session opens as its
        JupyterLab root (None: none), restored from ``snapshot`` when given, or a copy
        nothing saves back when ``read_only``. Raises
        :class:`~launcher.relay.workspaces.WorkspaceBusy` (naming the live session) when
        another live session writes it, other ``WorkspaceError`` s for a bad name or
        snapshot.
        """
        ticket = rs.new_ticket()
        sid = rs.new_session_id()
        ttl = self.config.ticket_ttl if ticket_ttl is None else ticket_ttl
        chosen = None
        if workspace is not None:
            opened = self.workspaces.open_for_session(owner, check_name(workspace), sid,
                                                      snapshot, read_only)
            chosen = {"name": opened.name, "snapshot": snapshot, "read_only": read_only}
        try:
            record = self.store.create(owner=owner, ticket=ticket, ttl=ttl,
                                       listen_port=FORWARD_PORT, mode=mode, label=label,
                                       default_url=default_url, session_id=sid,
                                       base_url=base_url, hub_env=hub_env,
                                       hub_forward=hub_forward, workspace=chosen)
        except BaseException:
            if chosen is not None:
                self.workspaces.close_for_session(owner, chosen["name"], sid)
            raise
        log.info("session %s created for %s", sid, owner)
        return record, ticket

    def redeem(self, ticket: str, public_key: str, notebook_token: str,
               runner: dict[str, Any]) -> rs.SessionRecord | None:
        """Enroll a runner's key; ``None`` when the ticket is unknown, used or expired.
        The runner's ``time_left`` becomes its ``deadlines`` (:mod:`.deadlines`)."""
        record = self.store.redeem(ticket, public_key, notebook_token,
                                   deadlines.from_redeem(runner))
        if record is not None:
            log.info("session %s: ticket redeemed by %s", record.id, runner.get("hostname"))
            self._notify(record.id)
        return record

    def end_session(self, session_id: str, runner_there: bool | None = None) -> None:
        """End a session: forget its key, route and idle channels. ``runner_there``: whether
        its runner is alive to make a final save of its workspace (default: whether its
        tunnel is up)."""
        record = self.store.get(session_id)
        if record is None or not record.live:
            return
        if runner_there is None:
            runner_there = self.routes.current(session_id) is not None
        self.store.set_state(session_id, SessionState.ENDED)
        self._release(session_id)
        if record.workspace and not record.workspace.get("read_only") and \
                runner_there and record.workspace_report is None:
            # the runner is there and may still be making its final save (stopped here
            # before the job's cancel reached it): it may log in for SFTP a while longer.
            # A runner that is not connected (gone, killed) gets no grace: what it saved
            # last is the snapshot now
            self._closing[session_id] = time.time() + self.config.workspace_final_save
        else:
            self._close_workspace(session_id)
        log.info("session %s ended", session_id)
        self._notify(session_id)

    def _workspace_held(self, session_id: str) -> bool:
        """Whether a session still holds the workspace it opened: while it lives, and
        after it ended until its runner's final save (or the grace for it) is over."""
        if session_id in self._closing:
            return True
        record = self.store.get(session_id) if self.store else None
        return record is not None and record.live

    def _close_workspace(self, session_id: str) -> None:
        """The session is done with its workspace: cut the snapshot, free it."""
        self._closing.pop(session_id, None)
        record = self.store.get(session_id)
        if record is None or not record.workspace:
            return
        report = record.workspace_report or {}
        snap = self.workspaces.close_for_session(
            record.owner, record.workspace["name"], session_id,
            saved=bool(report.get("saved")), resource=record.runner.get("hostname"))
        if snap is not None:
            log.info("session %s: workspace %r kept as snapshot %s (%d files, %d bytes%s)",
                     session_id, record.workspace["name"], snap.id, snap.files, snap.bytes,
                     "" if snap.saved else "; as last saved, the final save did not come")

    def _release(self, session_id: str) -> None:
        probe = self._probes.pop(session_id, None)
        if probe:
            probe.cancel()
        self.routes.drop(session_id)
        self.proxy_pool.drop(session_id)

    @staticmethod
    def session_root(record: rs.SessionRecord) -> str:
        """What the relay removes from a request's path before passing it to the session:
        nothing for a lab session (its base URL is ``/session/<id>/``), ``/session/<id>``
        for a hub-mode one (its base URL is the hub's prefix)."""
        return f"/session/{record.id}" if record.mode == rs.HUB_MODE else ""

    def public_host(self) -> str:
        host = self.config.public_host or self.config.http_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        return host

    def public_base(self) -> str:
        """The relay's public address, the base of every session URL."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{self.scheme}://{self.public_host()}:{self.http_port}"

    def own_origins(self) -> frozenset[str]:
        """The origins of the relay's own page: its public address and its local one (and,
        bound to loopback, that address by its other loopback names)."""
        urls = [self.public_base(), self.url]
        if self.config.http_host in ("127.0.0.1", "localhost", "::1"):
            urls += [f"{self.scheme}://{host}:{self.http_port}" for host in _LOOPBACK]
        return frozenset(_origin(url) for url in urls)

    def session_host(self, session_id: str) -> str | None:
        """The host name of a session's own origin (``<id>.<session_host>``), or None when
        sessions share the relay's origin."""
        host = self.config.session_host
        return f"{session_id}.{host.lower().strip('.')}" if host else None

    def session_origin(self, record: rs.SessionRecord) -> str:
        """Where a lab session's pages are served: its own origin with ``session_host``
        (the relay's public scheme and port), else the relay's public address."""
        host = self.session_host(record.id)
        if host is None or record.mode == rs.HUB_MODE:
            return self.public_base()
        public = urlsplit(self.public_base())
        return f"{public.scheme}://{host}" + (f":{public.port}" if public.port else "")

    def session_url(self, record: rs.SessionRecord, with_token: bool = True) -> str:
        """The address a user opens: the relay, base URL, start page, and the token.
        Clients take it from the API's answer; nothing else builds it.

        A hub-mode session's URL is the relay's own address: JupyterHub's proxy keeps only
        the host and port of a spawner's URL and forwards its ``<prefix>...`` paths there;
        the relay finds the session by that prefix (one live session per prefix), and the
        hub's OAuth guards it.
        """
        if record.mode == rs.HUB_MODE:
            return self.public_base()
        url = self.session_origin(record) + record.base_url + record.default_url.lstrip("/")
        if with_token and record.notebook_token:
            url += f"?token={record.notebook_token}"
        return url

    def view(self, record: rs.SessionRecord) -> dict[str, Any]:
        """A session as the API shows it to its owner; ``ends_at``/``ends_by``/``time_left``
        say when a live session ends by its runner's last report (:mod:`.deadlines`)."""
        return {
            "id": record.id, "state": record.state.value,
            "ready": record.state is SessionState.READY,
            "mode": record.mode, "label": record.label, "job_id": record.job_id,
            "url": self.session_url(record) if record.notebook_token or
            record.mode == rs.HUB_MODE else None,
            "base_url": record.base_url, "default_url": record.default_url,
            "runner": record.runner, "created": record.created, "updated": record.updated,
            "stop_reason": record.stop_reason,
            "workspace": ({**record.workspace, "report": record.workspace_report}
                          if record.workspace else None),
            **(deadlines.time_left(record.runner) if record.live else
               {"ends_at": None, "ends_by": None, "time_left": None}),
            "ticket_expires": (record.ticket_expires if record.state is SessionState.WAITING
                               else None),
        }

    def ssh_address(self) -> tuple[str, int]:
        """Where runners dial the SSH server: ``ssh_advertise``, else the host of the public
        address and the bound SSH port. Configuration only, never a request's Host header."""
        host = urlsplit(self.public_base()).hostname or self.public_host()
        if self.config.ssh_advertise:
            advertised, _, port = self.config.ssh_advertise.rpartition(":")
            return advertised.strip("[]") or host, int(port)
        return host, self.ssh_port

    def grant(self, record: rs.SessionRecord) -> dict[str, Any]:
        """What a runner gets for its ticket: where to dial, what to ask for, what to trust.

        Every address in it comes from the relay's configuration (``public_url``,
        ``ssh_advertise``, else what it bound), never from the redeeming request.
        ``ssh.websocket`` is the other way to the same SSH server, for runners whose network
        lets only HTTP(S) out: a WebSocket on the API port at the public address."""
        ssh_host, ssh_port = self.ssh_address()
        websocket_url = "ws" + self.public_base()[len("http"):] + WEBSOCKET_PATH  # wss
        grant = {
            "session_id": record.id, "base_url": record.base_url, "mode": record.mode,
            "ssh": {"host": ssh_host, "port": ssh_port, "username": record.id,
                    "websocket": websocket_url},
            "forward": {"host": self.config.listen_host, "port": record.listen_port},
            "host_key": self.host_key.export_public_key("openssh").decode().strip(),
            "url": self.session_url(record, with_token=False),
            "end_token": self.end_token(record.id),
            "workspace": None,
        }
        if record.workspace:
            grant["workspace"] = {
                "name": record.workspace["name"], "read_only": record.workspace["read_only"],
                "snapshot": record.workspace.get("snapshot"),
                "save_interval": self.config.workspace_save_interval,
                "max_file": self.config.workspace_max_file,
                "transport": "sftp",  # the SSH connection of the tunnel, or one like it
            }
        if record.mode == rs.HUB_MODE:
            # the hub's secrets travel here, after the ticket proved who is asking — never
            # in the job's inputs, which Everest stores and shows
            target = self.config.hub_api_address() if record.hub_forward else None
            grant["hub"] = {"env": record.hub_env or {},
                            "api": {"host": target[0], "port": target[1]} if target else None}
        return grant

    def end_token(self, session_id: str) -> str:
        """The runner's proof that it may end its session (derived, so a repeated redeem
        returns the same one and nothing needs storing)."""
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def time_key(self, session_id: str) -> str:
        """The key a session's pages ask for its time left with (derived, like the end
        token, and distinct from it: a page must never learn the runner's credential)."""
        return hmac.new(self._secret, b"time-left:" + session_id.encode(),
                        hashlib.sha256).hexdigest()[:32]

    def runner_deadlines(self, session_id: str, token: str, time_limit_left: float | None,
                         idle_left: float | None) -> bool:
        """A runner reports its deadlines as seconds left; False if ``token`` is not the
        session's end token. An ended session keeps what it had."""
        if not hmac.compare_digest(self.end_token(session_id), token):
            return False
        record = self.store.get(session_id)
        if record is not None and record.live:
            self.store.update(session_id, runner=deadlines.with_deadlines(
                record.runner, time_limit_left, idle_left))
        return True

    def runner_answering(self, session_id: str, token: str) -> bool:
        """A runner says its notebook answers on its side: the probe asks through the tunnel
        now instead of at its next timed look (it alone decides ``ready``). False if
        ``token`` is not the session's end token; nothing to do without a probe running
        (the tunnel is not up yet — its probe starts with it — or the session is ready)."""
        if not hmac.compare_digest(self.end_token(session_id), token):
            return False
        wake = self._probe_now.get(session_id)
        if wake is not None:
            wake.set()
        return True

    def runner_ended(self, session_id: str, token: str, reason: str,
                     stop: StopReason = StopReason.UNKNOWN,
                     workspace: dict[str, Any] | None = None) -> bool:
        """A runner says its session is over (``stop``, explained by ``reason``; with
        ``workspace``, how its final save went: ``{"saved", "files", "bytes", "error"?}``);
        False if ``token`` is not the session's."""
        if not hmac.compare_digest(self.end_token(session_id), token):
            return False
        record = self.store.get(session_id)
        if record is not None and workspace is not None and record.workspace:
            self.store.update(session_id, workspace_report=workspace)
            if not record.live:
                self._close_workspace(session_id)
        if record is not None and record.live:
            log.info("session %s: the runner stopped (%s: %s)", session_id, stop.value,
                     reason[:200])
            self.store.update(session_id, stop_reason=stop.value)
            self.end_session(session_id)
        return True

    async def wait_change(self, session_id: str, state: SessionState, timeout: float) -> None:
        """Return when the session's state differs from ``state`` or ``timeout`` passes."""
        record = self.store.get(session_id)
        deadline = time.monotonic() + timeout
        while record is not None and record.state is state:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event = self._changed.setdefault(session_id, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), left)
            record = self.store.get(session_id)

    def _notify(self, session_id: str) -> None:
        event = self._changed.pop(session_id, None)
        if event is not None:
            event.set()

    # -- SSH side -------------------------------------------------------------------------

    def _ssh_lookup(self, session_id: str) -> SSHPermit | None:
        record = self.store.get(session_id) if len(session_id) < 64 else None
        if record is None or not record.public_key:
            return None
        if not record.live and session_id not in self._closing:
            return None
        hub_api = None
        if record.mode == rs.HUB_MODE and record.hub_forward:
            hub_api = self.config.hub_api_address()
        return SSHPermit(record.public_key, self.config.listen_host, record.listen_port,
                         hub_api, forward=record.live,
                         sftp=(lambda: self._sftp_grant(session_id)) if record.workspace
                         else None)

    def _sftp_grant(self, session_id: str) -> SFTPGrant | None:
        """What the session's runner may reach over SFTP now: its own workspace, while the
        session lives (or its final save may still come)."""
        record = self.store.get(session_id)
        if record is None or not record.workspace or \
                not (record.live or session_id in self._closing):
            return None
        opened = self.workspaces.opened(record.owner, record.workspace["name"], session_id)
        if opened is None:
            return None
        ws = self.workspaces
        owner, name = record.owner, record.workspace["name"]
        resource = record.runner.get("hostname")
        return SFTPGrant(
            workspace=opened, max_file=ws.max_file,
            quota_left=lambda: (ws.quota - ws.usage(owner)) if ws.quota else None,
            on_change=lambda: ws.note_saved(owner, name, session_id, resource))

    def _route_up(self, session_id: str) -> None:
        record = self.store.get(session_id)
        if record is None or not record.live:
            return
        if not self.store.set_state(session_id, SessionState.CONNECTED):
            return
        self._notify(session_id)
        old = self._probes.pop(session_id, None)
        if old:
            old.cancel()
        self._probes[session_id] = asyncio.get_running_loop().create_task(
            self._probe(session_id))

    def _route_down(self, session_id: str, withdrawn: bool) -> None:
        self.proxy_pool.drop(session_id)
        probe = self._probes.pop(session_id, None)
        if probe:
            probe.cancel()
        record = self.store.get(session_id)
        if record is None or not record.live:
            return
        if withdrawn:
            log.info("session %s: the runner withdrew its forward (it is stopping)", session_id)
            self.end_session(session_id, runner_there=True)
            return
        self.store.set_state(session_id, SessionState.DISCONNECTED)
        log.info("session %s: tunnel down, route forgotten", session_id)
        self._notify(session_id)

    async def _probe(self, session_id: str) -> None:
        """Ask the notebook for ``api/status`` through the relay's own port (so through the
        proxy and the tunnel, as a user would) until it answers 200."""
        record = self.store.get(session_id)
        if record.mode == rs.HUB_MODE:
            # jupyterhub-singleuser: its unauthenticated version endpoint (what the hub's
            # own readiness check asks); its tokens are the hub's, not the runner's
            url = f"{self.url}{record.base_url}api"
            headers = {}
        else:
            url = f"{self.url}{record.base_url}api/status"
            headers = {"Authorization": f"token {record.notebook_token}"}
            if self.session_host(session_id):  # asked as a browser would, at its origin
                headers["Host"] = f"{self.session_host(session_id)}:{self.http_port}"
        deadline = time.monotonic() + self.config.probe_timeout
        fast_until = time.monotonic() + 15.0
        delay = 0.05
        wake = self._probe_now[session_id] = asyncio.Event()
        try:
            while time.monotonic() < deadline:
                try:
                    await AsyncHTTPClient().fetch(HTTPRequest(
                        url, headers=headers, connect_timeout=5, request_timeout=10,
                        validate_cert=False))
                except (HTTPClientError, OSError) as exc:
                    log.debug("session %s: probe failed (%s)", session_id, exc)
                    # the runner says when its notebook answers (runner_answering); the
                    # timed looks are for runners that do not, or a word lost on the way:
                    # often at first, since every pause past the moment it answers is
                    # added to the launch
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(wake.wait(), delay)
                    wake.clear()
                    delay = min(delay * 1.5, 0.2 if time.monotonic() < fast_until else 1.0)
                    continue
                if self.routes.current(session_id) is not None:
                    self.store.set_state(session_id, SessionState.READY)
                    log.info("session %s ready", session_id)
                    self._notify(session_id)
                return
            log.warning("session %s: the notebook did not answer through the tunnel in %.0f "
                        "s", session_id, self.config.probe_timeout)
        finally:
            if self._probe_now.get(session_id) is wake:
                del self._probe_now[session_id]


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` as a browser's ``Origin`` header spells it."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"


async def serve(config: RelayConfig, stop: asyncio.Event | None = None) -> None:
    """Run a relay until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None)."""
    import signal

    relay = Relay(config)
    await relay.start()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await relay.stop()


def run(args: argparse.Namespace) -> int:
    """Run the relay of a parsed command line (see :func:`add_relay_arguments`) in the
    foreground until SIGINT/SIGTERM; the Everest URL comes from ``--everest`` or the profile."""
    everest = app_config.load_profile(args.profile, url=args.everest).url
    if not everest:
        raise SystemExit("error: the relay needs an Everest to check tokens with: --everest URL "
                         "or a configured profile")
    try:
        cfg = from_options(RelayConfig, args, everest_url=everest)
    except (ValueError, TraitError) as exc:
        raise SystemExit(f"error: {exc}") from None
    logging.getLogger("launcher").setLevel(logging.DEBUG if args.debug else logging.INFO)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m launcher.relay``: the relay as a service, without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="python -m launcher.relay",
                                     description=RELAY_DESCRIPTION)
    parser.add_argument("--everest", metavar="URL", help="the Everest whose tokens to accept")
    parser.add_argument("--profile", help="take the Everest URL from this profile")
    parser.add_argument("--debug", action="store_true", help="log debug output")
    add_relay_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    return run(args)

