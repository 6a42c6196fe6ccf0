"""Enroll with the relay and keep the SSH tunnel to it open.

The runner makes a fresh SSH key for the session, redeems its one-time ticket at the relay
(``POST <relay>/api/tickets/redeem``) and gets back its session id, base URL, the listener it
may ask for, and the relay's host key, which it pins: the tunnel never trusts any other key.
Then it asks for exactly that remote forward, pointing at JupyterLab on loopback, and keeps
the connection alive, reconnecting with backoff. A refused login or forward means the relay
ended the session: the runner stops.

Python >= 3.8; needs asyncssh (the bootstrap provides it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

import asyncssh

log = logging.getLogger("session_runner.tunnel")

# AES-GCM first: with AES instructions it moves ~1.4x the bytes of chacha20-poly1305 through
# asyncssh (benchmarks/launch.py); the rest stay as fallbacks. Never compress: notebooks'
# traffic is small or already compressed, and zlib would cost more than it saves here.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr"]


class RedeemError(RuntimeError):
    """The relay refused the ticket (or could not be reached); the message says which."""


class SessionEnded(RuntimeError):
    """The relay no longer accepts this session's key or listener."""


class Grant:
    """What redeeming a ticket gives: session id, base URL, SSH endpoint, listener, host key."""

    def __init__(self, doc: dict[str, object], relay_url: str):
        try:
            self.session_id = str(doc["session_id"])
            self.base_url = str(doc["base_url"])
            ssh = doc["ssh"]
            forward = doc["forward"]
            self.ssh_host = str(ssh.get("host") or urllib.parse.urlsplit(relay_url).hostname)
            self.ssh_port = int(ssh["port"])
            self.username = str(ssh.get("username") or self.session_id)
            self.listen_host = str(forward["host"])
            self.listen_port = int(forward["port"])
            self.host_key = asyncssh.import_public_key(str(doc["host_key"]))
            self.end_token = str(doc.get("end_token") or "")
        except (KeyError, TypeError, ValueError, AttributeError, asyncssh.KeyImportError) as exc:
            raise RedeemError(f"the relay's answer is not a session grant ({exc})") from None
        if not self.base_url.startswith("/") or not self.base_url.endswith("/"):
            raise RedeemError(f"the relay gave a bad base URL {self.base_url!r}")


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The ``message`` of the relay's JSON error body, else the status line."""
    try:
        return str(json.loads(exc.read().decode("utf-8"))["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {exc.code} {exc.reason}"


def redeem(relay_url: str, ticket: str, public_key: str, notebook_token: str,
           info: dict[str, object], attempts: int = 6) -> Grant:
    """Redeem ``ticket`` for ``public_key``; retry network failures with backoff.

    A retry after a lost answer is safe: the relay answers the same grant again to the same
    key. Raises :class:`RedeemError` when the relay refuses (4xx) or stays unreachable.
    """
    body = json.dumps({"ticket": ticket, "public_key": public_key,
                       "notebook_token": notebook_token, "runner": info}).encode("utf-8")
    url = relay_url + "/api/tickets/redeem"
    delay = 0.5
    for attempt in range(1, attempts + 1):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return Grant(json.loads(resp.read().decode("utf-8")), relay_url)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise RedeemError(f"the relay refused the ticket: {_error_text(exc)}") from None
            reason = _error_text(exc)
        except (OSError, ValueError) as exc:
            reason = str(exc)
        log.warning("redeeming the ticket at %s failed (%s), attempt %d of %d",
                    relay_url, reason, attempt, attempts)
        if attempt < attempts:
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise RedeemError(f"the relay at {relay_url} could not be reached: {reason}")


def report_end(relay_url: str, grant: Grant, reason: str) -> bool:
    """Tell the relay the session is over (it may never have had a tunnel to withdraw).

    Best effort, two tries; returns whether the relay took it.
    """
    if not grant.end_token:
        return False
    body = json.dumps({"end_token": grant.end_token, "reason": reason}).encode("utf-8")
    url = f"{relay_url}/api/sessions/{grant.session_id}/ended"
    for _ in range(2):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5):
                return True
        except urllib.error.HTTPError as exc:
            log.warning("the relay did not take the end of the session: %s", _error_text(exc))
            return False
        except OSError as exc:
            log.warning("could not tell the relay the session ended: %s", exc)
    return False


def make_key() -> asyncssh.SSHKey:
    """A fresh Ed25519 key for this session; it never leaves the process."""
    return asyncssh.generate_private_key("ssh-ed25519", comment="everest-jupyter session")


def public_key_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode("ascii").strip()


def runner_info(mode: str) -> dict[str, object]:
    """What the relay may show about where the session runs."""
    return {"hostname": socket.gethostname(), "python": sys.version.split()[0],
            "platform": sys.platform, "mode": mode}


class Tunnel:
    """The runner's side of the relay tunnel.

    :meth:`run` connects, asks for the granted forward to ``127.0.0.1:local_port`` and stays
    connected; when the connection drops it reconnects with exponential backoff and jitter
    (first retry after ``min_delay``). It returns only when :meth:`close` is called, and
    raises :class:`SessionEnded` when the relay refuses the key or the forward.
    ``connects``/``disconnects`` count what happened, for the summary.
    """

    def __init__(self, grant: Grant, key: asyncssh.SSHKey, local_port: int,
                 on_state: Callable[[str], None] | None = None,
                 min_delay: float = 0.2, max_delay: float = 10.0):
        self.grant = grant
        self.key = key
        self.local_port = local_port
        self.on_state = on_state or (lambda state: None)
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.connects = 0
        self.disconnects = 0
        self._closing = False
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listener: asyncssh.SSHListener | None = None

    async def _connect_once(self) -> None:
        g = self.grant
        conn = await asyncssh.connect(
            g.ssh_host, g.ssh_port, username=g.username, client_keys=[self.key],
            known_hosts=([g.host_key], [], []), config=None, agent_path=None,
            preferred_auth="publickey", keepalive_interval=10, keepalive_count_max=3,
            connect_timeout=15, encryption_algs=CIPHERS, compression_algs=None)
        self._conn = conn
        try:
            try:
                self._listener = await conn.forward_remote_port(
                    g.listen_host, g.listen_port, "127.0.0.1", self.local_port)
            except asyncssh.ChannelListenError as exc:
                raise SessionEnded(f"the relay refused the forward: {exc}") from None
            self.connects += 1
            log.info("tunnel up: %s:%d on the relay -> 127.0.0.1:%d", g.listen_host,
                     g.listen_port, self.local_port)
            self.on_state("connected")
            await conn.wait_closed()
        finally:
            conn.close()
            self._conn = self._listener = None

    async def run(self) -> None:
        delay = self.min_delay
        while not self._closing:
            started = time.monotonic()
            try:
                await self._connect_once()
            except asyncssh.PermissionDenied:
                raise SessionEnded("the relay no longer accepts this session's key") from None
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                log.warning("tunnel: %s", exc or type(exc).__name__)
            if self._closing:
                break
            self.disconnects += 1
            self.on_state("disconnected")
            if time.monotonic() - started > 30:
                delay = self.min_delay  # it was up for a while: this is a fresh failure
            wait = delay * (0.5 + random.random() / 2)
            log.info("tunnel down; reconnecting in %.1f s", wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_delay)

    async def close(self) -> None:
        """Stop reconnecting; withdraw the forward (telling the relay the session is over,
        not merely disconnected), then close the connection."""
        self._closing = True
        conn, listener = self._conn, self._listener
        if listener is not None:
            listener.close()  # sends cancel-tcpip-forward
            try:
                await asyncio.wait_for(listener.wait_closed(), 2.0)
            except (asyncio.TimeoutError, asyncssh.Error, OSError):
                pass
        if conn is not None:
            conn.close()
