"""The relay's settings, declared once (see :mod:`everest_app.options`), and its command-line
options: light to import, so building the CLI does not load the relay (asyncssh, tornado)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from traitlets import Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from everest_app import client_address
from everest_app.config import data_dir as app_data_dir
from everest_app.options import HostPort, PathTrait, add_options, split_host_port

RELAY_DESCRIPTION = (
    "Run the relay: an HTTP API for sessions and tickets, an SSH server for session tunnels, "
    "every session under /session/<id>/ on the same HTTP(S) port. State persists in "
    "--state-dir, so a restart keeps sessions.")


class RelayConfig(Configurable):
    """How a relay runs: its settings, declared once (``everest-jupyter relay`` options, config
    files, ``docs/reference/relay.md``; see :mod:`everest_app.options`)."""

    state_dir = PathTrait(
        help="Where sessions, the SSH host key and the runners' secret live (kept across "
             "restarts, so sessions survive them).",
    ).tag(config=True, default_text="$XDG_DATA_HOME/everest-jupyter/relay")
    everest_url = Unicode(
        help="The Everest (or local server) whose tokens the relay accepts (the command line "
             "takes it from --everest or the profile).",
    ).tag(config=True, cli=False)
    http = HostPort(
        "127.0.0.1:8765",
        help="The one HTTP(S) address of the API and every session, under /session/<id>/ "
             "(port 0: the one used last time, else a free one).").tag(config=True)
    ssh = HostPort("127.0.0.1:8022", help="The SSH address for tunnels.").tag(config=True)
    listen_host = Unicode(
        "127.0.0.1",
        help="The host name of the sessions' forwards in the SSH protocol (nothing binds it; "
             "older runners keep theirs).").tag(config=True, metavar="HOST")
    public_host = Unicode(
        None, allow_none=True,
        help="The host name in session URLs (default: the HTTP host, or this machine's name "
             "when that is a wildcard).").tag(config=True, metavar="HOST")
    public_url = Unicode(
        None, allow_none=True,
        help="The relay's public address: runners are told to use it (relay_url, the "
             "WebSocket entrance) and session URLs start with it (default: the public host "
             "with the bound HTTP port; never the Host header a request carries).",
    ).tag(config=True, metavar="URL")
    session_host = Unicode(
        None, allow_none=True,
        help="A wildcard host for sessions (as JupyterHub's subdomain_host): each session is "
             "served at <session id>.<this host> on the relay's port, an origin of its own, "
             "so a page one session serves cannot use the relay's API or another session "
             "with its visitor's cookies. Needs DNS (and a certificate) for *.<this host>. "
             "Default: every session on the relay's own origin (see docs/security.md).",
    ).tag(config=True, metavar="HOST")
    ssh_advertise = HostPort(
        None, allow_none=True,
        help="The SSH address runners dial, when NAT or a port forward sits between (default: "
             "the host of the public address, and the bound SSH port).").tag(config=True)
    ticket_ttl = Float(900.0, help="Seconds a session's ticket stays valid.").tag(config=True)
    http_idle_timeout = Float(
        60.0, help="Seconds an HTTP connection may wait for its next request (its first one "
                   "too) before the relay closes it; WebSockets and requests being answered "
                   "are not cut.").tag(config=True)
    tunnel_preauth_per_address = Integer(
        16, help="Tunnel WebSockets (/api/tunnel) from one address that may be open before "
                 "their runner has logged in; more get 429.").tag(config=True, metavar="N")
    tunnel_preauth_limit = Integer(
        256, help="Tunnel WebSockets from all addresses together that may be open before "
                  "their runner has logged in; more get 429.").tag(config=True, metavar="N")
    tunnel_preauth_timeout = Float(
        15.0, help="Seconds a tunnel WebSocket (and a connection to the SSH port) may take "
                   "to log in before the relay closes it.").tag(config=True)
    stale_after = Float(
        24 * 3600.0,
        help="Seconds a session may stay starting or disconnected before the relay ends it "
             "(its runner is gone).").tag(config=True)
    hold = Float(
        10.0, help="Seconds a user's request waits for a tunnel that is reconnecting.",
    ).tag(config=True)
    probe_timeout = Float(
        300.0, help="Seconds the relay keeps asking a new session's notebook for its status "
                    "through the tunnel before giving up (the runner connects while its "
                    "notebook boots, and gives the boot 180 s).").tag(config=True)
    time_warning = Float(
        300.0, help="Seconds before a session's end (time limit or idle timeout) from which "
                    "its JupyterLab pages show a warning banner counting down (0: never).",
    ).tag(config=True, metavar="SECONDS")
    max_proxied_body = Integer(
        64 << 30, help="The largest request body a session accepts through the relay, in "
                       "bytes (streamed, not buffered).").tag(config=True, metavar="BYTES")
    auth_cache = Float(
        5.0, help="Seconds Everest's answer on a token is reused (a revoked token works here "
                  "at most this long).").tag(config=True)
    login_attempts = Integer(
        5, help="Failed sign-ins on the relay's page (POST /api/login) for one user from one "
                "address before each further try from there must wait (1 s, doubling up to "
                "login_backoff_max; 4x this from one address for any users). The relay "
                "answers 429 with Retry-After itself, before the password reaches Everest.",
    ).tag(config=True, metavar="N")
    login_backoff_max = Float(
        900.0, help="The longest wait between page sign-in tries after failures, in seconds.",
    ).tag(config=True, metavar="SECONDS")
    trusted_proxies = List(
        Unicode(),
        help="Addresses or networks (CIDR) of reverse proxies in front of the relay whose "
             "X-Forwarded-For it believes: a page sign-in through them counts against the "
             "address they name (the last one not a trusted proxy). None by default: the "
             "connection's peer counts, whatever a request's headers say.",
    ).tag(config=True, option="--trusted-proxy", dest="trusted_proxy", metavar="ADDRESS",
          append=True)
    client_address_key_file = PathTrait(
        None, allow_none=True,
        help="The local server's client-address key (its <data dir>/client-address.key; the "
             "relay embedded in the server reads it there): with it, a page sign-in tells "
             "the server the browser's address, signed, so the server's per-address "
             "throttle counts each browser and not the relay. A real Everest has no such key: "
             "leave it unset, and the relay's own throttle (login_attempts) is what keeps "
             "one address's guesses from locking out others.",
    ).tag(config=True, metavar="FILE")
    certfile = Unicode(
        None, allow_none=True, help="TLS certificate of the API and the sessions.",
    ).tag(config=True, metavar="FILE")
    keyfile = Unicode(None, allow_none=True, help="TLS private key.").tag(
        config=True, metavar="FILE")
    info_file = PathTrait(
        None, allow_none=True,
        help='Where to write {"pid", "url", "ssh_port"} once listening.').tag(config=True)
    hub_api = HostPort(
        None, allow_none=True,
        help="A JupyterHub's API address as this machine reaches it: hub-mode sessions may "
             "forward to it (and nowhere else) through their tunnel. Without it they must "
             "reach the hub some other way (EverestSpawner.hub_api_url).").tag(config=True)
    hub_service_accounts = List(
        Unicode(),
        help="Everest accounts (a hub's service token) that may start hub servers for any hub "
             "user; other accounts only for their own user name.",
    ).tag(config=True, option="--hub-service-account", dest="hub_service_account",
          metavar="USER", append=True)

    workspace_quota = Integer(
        10 << 30,
        help="Bytes each user's workspaces may take at the relay, snapshots included (each "
             "stored file counted once); 0: no limit.").tag(config=True, metavar="BYTES")
    workspace_max_file = Integer(
        2 << 30, help="The largest file a workspace keeps, in bytes; 0: no limit.",
    ).tag(config=True, metavar="BYTES")
    workspace_history = Integer(
        10, help="Snapshots kept per workspace (one is cut when a session that wrote it "
                 "ends); older ones are dropped.").tag(config=True, metavar="N")
    workspace_save_interval = Float(
        5.0, help="Seconds between a session runner's scans for changed files to save into "
                  "its workspace (the work at risk if the resource dies is about this much "
                  "plus one upload).").tag(config=True, metavar="SECONDS")

    workspace_final_save = Float(
        120.0, help="Seconds a session's runner may still log in to make its final save into "
                    "the workspace after the session was ended at the relay (stop from the "
                    "web page or API before the job's cancel reached the runner); then what "
                    "it saved last becomes the snapshot.").tag(config=True, metavar="SECONDS")

    @validate("trusted_proxies")
    def _networks(self, proposal: dict) -> list[str]:
        for value in proposal["value"]:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise TraitError(f"trusted proxy {value!r} is not an address or network "
                                 "(such as 10.0.0.5 or 10.0.0.0/24)") from None
        return proposal["value"]

    @validate("client_address_key_file")
    def _key_readable(self, proposal: dict) -> Path | None:
        if proposal["value"] is not None:
            try:
                client_address.read_key(proposal["value"])
            except ValueError as exc:
                raise TraitError(str(exc)) from None
        return proposal["value"]

    @validate("login_attempts", "login_backoff_max")
    def _positive(self, proposal: dict) -> float:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name.replace('_', ' ')} must be at least 1")
        return proposal["value"]

    @default("state_dir")
    def _default_state_dir(self) -> Path:
        return app_data_dir() / "relay"

    @property
    def http_host(self) -> str:
        return split_host_port(self.http)[0]

    @property
    def http_port(self) -> int:
        return split_host_port(self.http)[1]

    @property
    def ssh_host(self) -> str:
        return split_host_port(self.ssh)[0]

    @property
    def ssh_port(self) -> int:
        return split_host_port(self.ssh)[1]

    def hub_api_address(self) -> tuple[str, int] | None:
        """``hub_api`` as (host, port), or None when not configured."""
        return split_host_port(self.hub_api, "hub_api") if self.hub_api else None


def add_relay_arguments(p: argparse.ArgumentParser) -> None:
    """Add the relay's options (``everest-jupyter relay``, ``python -m launcher.relay``): one
    per :class:`RelayConfig` setting."""
    add_options(p, RelayConfig,
                title="settings (docs/reference/relay.md; also c.RelayConfig.<name>)")
