"""The runner's side of the relay's HTTP protocol: its key, the ticket, the end report.

The runner makes a fresh Ed25519 key for the session, redeems its one-time ticket at the
relay (``POST <relay>/api/tickets/redeem``) and gets back a :class:`Grant`: its session id,
base URL, the listener it may ask for, the relay's host key (which the tunnel pins) and a
token to report the session's end (and its deadlines) with. This module needs only the
standard library and ``cryptography`` (which asyncssh depends on), so it runs before asyncssh
is imported: the runner imports asyncssh (:mod:`runner_tunnel`) while JupyterLab boots.

Python >= 3.8.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger("session_runner.relay")


class RedeemError(RuntimeError):
    """The relay refused the ticket (or could not be reached); the message says which."""


class SessionEnded(RuntimeError):
    """The relay no longer accepts this session's key or listener (it ended the session)."""


class Grant:
    """What redeeming a ticket gives: session id, base URL, SSH endpoint (and the WebSocket
    that reaches the same SSH server, ``websocket_url``, empty if none), listener, host key."""

    def __init__(self, doc: dict[str, object], relay_url: str):
        try:
            self.session_id = str(doc["session_id"])
            self.base_url = str(doc["base_url"])
            ssh = doc["ssh"]
            forward = doc["forward"]
            self.ssh_host = str(ssh.get("host") or urllib.parse.urlsplit(relay_url).hostname)
            self.ssh_port = int(ssh["port"])
            self.username = str(ssh.get("username") or self.session_id)
            websocket = str(ssh.get("websocket") or "")
            self.websocket_url = websocket if websocket.startswith(("ws://", "wss://")) else ""
            self.listen_host = str(forward["host"])
            self.listen_port = int(forward["port"])
            self.host_key = str(doc["host_key"])
            self.end_token = str(doc.get("end_token") or "")
            self.mode = str(doc.get("mode") or "lab")
            hub = doc.get("hub") if self.mode == "hub" else None
            # hub mode: the environment the hub gives its server, and where (on the relay's
            # side) the hub's API is, if the relay forwards to it
            self.hub_env = {str(k): str(v) for k, v in (hub or {}).get("env", {}).items()}
            api = (hub or {}).get("api")
            self.hub_api = (str(api["host"]), int(api["port"])) if api else None
            # the user's workspace this session opens ({"name", "read_only", "snapshot",
            # "save_interval", "max_file"}), saved over SFTP (runner_workspace), or None
            workspace = doc.get("workspace")
            self.workspace = dict(workspace) if isinstance(workspace, dict) else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RedeemError(f"the relay's answer is not a session grant ({exc})") from None
        if not self.base_url.startswith("/") or not self.base_url.endswith("/"):
            raise RedeemError(f"the relay gave a bad base URL {self.base_url!r}")
        if not self.host_key.startswith("ssh-"):
            raise RedeemError(f"the relay gave a bad host key {self.host_key[:40]!r}")


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


def report_end(relay_url: str, grant: Grant, stop: str | None, reason: str,
               workspace: dict[str, object] | None = None) -> bool:
    """Tell the relay the session is over (it may never have had a tunnel to withdraw):
    ``stop`` is a ``runner_stop.StopReason`` value, ``reason`` the same for a person,
    ``workspace`` how the workspace's final save went (``Workspace.report``).

    Best effort, two tries; returns whether the relay took it.
    """
    if not grant.end_token:
        return False
    doc: dict[str, object] = {"end_token": grant.end_token, "stop": stop, "reason": reason}
    if workspace is not None:
        doc["workspace"] = workspace
    body = json.dumps(doc).encode("utf-8")
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


def report_deadlines(relay_url: str, grant: Grant, time_limit_left: float | None,
                     idle_left: float | None) -> bool:
    """Tell the relay when the session will end, as seconds left (``None``: no such
    deadline); it shows the time left and warns in JupyterLab. Best effort, one try."""
    return _tell(relay_url, grant, "deadlines", "the session's deadlines", logging.WARNING,
                 time_limit_left=time_limit_left, idle_left=idle_left)


def report_answering(relay_url: str, grant: Grant) -> bool:
    """Tell the relay the notebook answers here, so it asks through the tunnel now rather
    than at its next timed look (saving up to that look's interval on every launch).
    Best effort, one quick try: the relay's timed looks remain. Returns whether it took
    it."""
    return _tell(relay_url, grant, "answering", "that the notebook answers", logging.INFO)


def _tell(relay_url: str, grant: Grant, what: str, told: str, level: int,
          **fields: object) -> bool:
    """POST ``fields`` with the session's end token to the relay's
    ``/api/sessions/<id>/<what>``, once; whether the relay took it (a refusal or a failure
    is logged at ``level``, naming ``told``)."""
    if not grant.end_token:
        return False
    body = json.dumps(dict(fields, end_token=grant.end_token)).encode("utf-8")
    req = urllib.request.Request(f"{relay_url}/api/sessions/{grant.session_id}/{what}",
                                 data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return True
    except urllib.error.HTTPError as exc:
        log.log(level, "the relay did not take %s: %s", told, _error_text(exc))
    except OSError as exc:
        log.log(level, "could not tell the relay %s: %s", told, exc)
    return False


class SessionKey:
    """A fresh Ed25519 key for this session; it never leaves the process.

    ``public_openssh`` is the ``ssh-ed25519 AAAA...`` line the relay enrolls;
    ``private_openssh`` the private key in OpenSSH format, for asyncssh.
    """

    def __init__(self) -> None:
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        blob = b"".join(struct.pack(">I", len(part)) + part for part in (b"ssh-ed25519", raw))
        self.public_openssh = "ssh-ed25519 " + base64.b64encode(blob).decode("ascii")
        self.private_openssh = key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.OpenSSH,
                                                 serialization.NoEncryption())


def runner_info(mode: str, time_limit_left: float | None = None,
                idle_timeout: float | None = None) -> dict[str, object]:
    """What the relay may show about where the session runs, and when it will end (seconds
    left; ``None``: no such deadline)."""
    return {"hostname": socket.gethostname(), "python": sys.version.split()[0],
            "platform": sys.platform, "mode": mode,
            "time_left": {"time_limit": time_limit_left, "idle": idle_timeout}}
