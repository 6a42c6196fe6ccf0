"""CLI: ``launch``, ``sessions``, ``stop`` and ``relay``.

``launch`` runs a JupyterLab session as an Everest job and prints its URL
(:mod:`launcher.launch`); ``sessions`` lists the live ones; ``stop ID`` ends one; ``relay``
runs the relay as a service (:mod:`launcher.relay`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from everest_app import config as app_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the session commands to the root parser."""
    _register_relay(subparsers)


RELAY_DESCRIPTION = (
    "Run the relay: an HTTP API for sessions and tickets, an SSH server for session tunnels, "
    "and one listener per session. State persists in --state-dir, so a restart keeps sessions.")


def _register_relay(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "relay", help="run the relay (session rendezvous and tunnel end) as a service",
        description=RELAY_DESCRIPTION)
    add_relay_arguments(p)
    p.set_defaults(func=run_relay)


def add_relay_arguments(p: argparse.ArgumentParser) -> None:
    """Add the relay's options (``everest-jupyter relay``, ``python -m launcher.relay``)."""
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where sessions and the SSH host key live (default: <data dir>/relay)")
    p.add_argument("--http", default="127.0.0.1:8765", metavar="HOST:PORT",
                   help="API address (default 127.0.0.1:8765; port 0 picks one)")
    p.add_argument("--ssh", default="127.0.0.1:8022", metavar="HOST:PORT",
                   help="SSH address for tunnels (default 127.0.0.1:8022)")
    p.add_argument("--listen-host", default="127.0.0.1",
                   help="where session listeners bind (0.0.0.0 to serve other machines)")
    p.add_argument("--public-host", default=None,
                   help="host name in session URLs (default: --listen-host or this machine)")
    p.add_argument("--public-url", default=None,
                   help="relay address runners are told to use (default: as the caller saw it)")
    p.add_argument("--ssh-advertise", default=None, metavar="HOST:PORT",
                   help="SSH address runners dial, when NAT or a port forward sits between")
    p.add_argument("--ticket-ttl", type=float, default=900.0,
                   help="seconds a ticket stays valid (default 900)")
    p.add_argument("--certfile", default=None, help="TLS certificate (API and listeners)")
    p.add_argument("--keyfile", default=None, help="TLS private key")
    p.add_argument("--info-file", type=Path, default=None,
                   help='write {"pid","url","ssh_port"} here once listening')


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"error: {what} must be HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def run_relay(args: argparse.Namespace) -> int:
    """Run the relay in the foreground until SIGINT/SIGTERM."""
    from launcher.relay import RelayConfig, serve

    everest = app_config.load_profile(args.profile, url=args.everest).url
    if not everest:
        raise SystemExit("error: the relay needs an Everest to check tokens with: --everest URL "
                         "or a configured profile")
    http_host, http_port = _host_port(args.http, "--http")
    ssh_host, ssh_port = _host_port(args.ssh, "--ssh")
    cfg = RelayConfig(
        state_dir=args.state_dir or app_config.data_dir() / "relay", everest_url=everest,
        http_host=http_host, http_port=http_port, ssh_host=ssh_host, ssh_port=ssh_port,
        listen_host=args.listen_host, public_host=args.public_host,
        public_url=args.public_url, ssh_advertise=args.ssh_advertise,
        ticket_ttl=args.ticket_ttl, certfile=args.certfile, keyfile=args.keyfile,
        info_file=args.info_file)
    logging.getLogger("launcher").setLevel(logging.DEBUG if args.debug else logging.INFO)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        pass
    return 0
