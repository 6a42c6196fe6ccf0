"""The embedded default: a local server (with its built-in relay) in the background.

With no Everest configured, ``everest-jupyter launch`` uses an Everest-compatible local server
running on this machine under the user's data directory (``<data dir>/server``), started on
first use and reused afterwards; the server's ``launcher.relay.plugin`` plugin runs the
relay in the same process, so ``everest-jupyter server stop`` stops both.

The launcher signs in as a local user named after the OS account, created with a random
password on first use; it keeps only the resulting token, in ``<data dir>/embedded-token``
(0600). If the token stops working (the server's data was reset) the user's password is
reset and a new token is obtained.

Its settings (``c.ServerSettings.<name>``, see docs/reference/server.md) come from
``$XDG_CONFIG_HOME/everest-jupyter/server_config.py`` when that file exists. Started as
root, it first readies the machine for running tasks as unprivileged task accounts
(:func:`everest_local.task_users.prepare_for_root`), so that ``pip install -e . &&
everest-jupyter launch`` works on a fresh machine where everything runs as root.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from traitlets import TraitError

from everest_app.client import EverestClient
from everest_app.config import config_dir, data_dir, read_token, write_private
from everest_app.errors import AuthError, EverestConnectionError, EverestError
from everest_app.options import load_config
from everest_local.settings import ServerSettings, default_data_dir
from everest_local.task_users import prepare_for_root
from launcher.relay.client import RELAY_JSON

log = logging.getLogger(__name__)

TOKEN_FILE = "embedded-token"
LOG_FILE = "server.log"
LOCK_FILE = "embedded.lock"
SERVER_CONFIG = "server_config.py"
TOKEN_LIFETIME = 365 * 24 * 3600


@dataclass(frozen=True)
class Embedded:
    """A running embedded server: its URL, the relay's URL, and the launcher's token."""

    url: str
    relay_url: str
    token: str
    pid: int


def server_dir() -> Path:
    """Where the embedded server keeps its data (the server CLI's default too)."""
    return default_data_dir()


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running() -> tuple[int, str, str] | None:
    """``(pid, server_url, relay_url)`` of the embedded server if it runs, else None.

    It runs when ``server.json`` and ``relay.json`` name the same process and its relay
    answers for that server (cheaper than importing the server's code to check its lock
    on every launch).
    """
    directory = server_dir()
    server = _read_json(directory / "server.json") or {}
    relay = _read_json(directory / RELAY_JSON) or {}
    pid = server.get("pid")
    if not pid or relay.get("pid") != pid or not server.get("url"):
        return None
    try:
        info = requests.get(relay["url"] + "/api/relay", timeout=5).json()
    except (requests.RequestException, ValueError, KeyError):
        return None
    if not isinstance(info, dict) or info.get("everest_url") != server["url"]:
        return None
    return pid, server["url"], relay["url"]


def not_running_error() -> EverestError:
    """What to say when a command needs an Everest but none is configured and the embedded
    server is not running: it was stopped, or never started."""
    if (data_dir() / TOKEN_FILE).exists():
        return EverestConnectionError(
            "the local Everest server is not running (it was stopped): start it with "
            "'everest-jupyter server start' (or 'everest-jupyter launch'), or pass "
            "--everest URL")
    return EverestError(
        "No Everest server configured: start the local one with 'everest-jupyter server "
        "start' (or 'everest-jupyter launch'), or use a real Everest with --everest URL, "
        "EVEREST_URL, or 'everest-jupyter --everest URL login'")


def _start_server(progress: Callable[[str], None], timeout: float) -> tuple[int, str, str]:
    directory = server_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVEREST_")}
    cmd = [sys.executable, "-m", "everest_local", "--plugin", "launcher.relay.plugin",
           "--host", "127.0.0.1", "--port", "0",
           "--data-dir", str(directory)]
    config = config_dir() / SERVER_CONFIG
    try:
        settings = ServerSettings(config=load_config(config) if config.is_file() else None)
        if config.is_file():
            cmd += ["--config", str(config)]
        if os.geteuid() == 0:
            prepare_for_root(settings.task_user,
                             lambda msg: print(f"- {msg}", file=sys.stderr, flush=True))
    except (ValueError, TraitError, OSError) as exc:
        raise EverestError(f"cannot start the local Everest server: {exc}") from exc
    progress("starting the local Everest server (embedded default)")
    with open(data_dir() / LOG_FILE, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = running()
        if found:
            return found
        if proc.poll() is not None and not found:
            tail = (data_dir() / LOG_FILE).read_text(errors="replace")[-2000:]
            raise EverestConnectionError(
                f"the local server exited with code {proc.returncode}; its log "
                f"({data_dir() / LOG_FILE}) ends with:\n{tail}")
        time.sleep(0.05)
    raise EverestConnectionError(f"the local server did not come up in {timeout:.0f} s; see "
                                 f"{data_dir() / LOG_FILE}")


def local_user_name() -> str:
    """The local server user for this OS account (a valid Everest user name)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    name = re.sub(r"[^A-Za-z0-9_.@-]", "_", name).lstrip("_.@-")[:64]
    return name or "user"


def _new_token(url: str) -> str:
    from everest_local.auth import add_user

    name = local_user_name()
    password = secrets.token_urlsafe(24)
    add_user(server_dir(), name, password)  # creates the user, or resets its password
    token = EverestClient.login(url, name, password, label="everest-jupyter launch",
                                lifetime=TOKEN_LIFETIME)
    write_private(data_dir() / TOKEN_FILE, token + "\n")
    return token


def _token_for(url: str) -> str:
    token = read_token(data_dir() / TOKEN_FILE)
    if token:
        try:
            with EverestClient(url, token, retries=1) as client:
                client.token_info()
            return token
        except AuthError:
            log.info("the embedded server no longer knows the saved token; signing in again")
    return _new_token(url)


def ensure(progress: Callable[[str], None] = lambda msg: None,
           timeout: float = 60.0) -> Embedded:
    """Start the embedded server (and relay) unless it runs; return how to reach it.

    Concurrent callers wait for each other (a lock file), so only one server starts.
    Raises :class:`EverestConnectionError` if it does not come up.
    """
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        found = running() or _start_server(progress, timeout)
        pid, url, relay_url = found
        return Embedded(url=url, relay_url=relay_url, token=_token_for(url), pid=pid)
    finally:
        os.close(fd)


def stop(timeout: float = 60.0) -> bool:
    """Stop the embedded server (and its relay); False when none was running."""
    from everest_local.app import stop_server

    return stop_server(server_dir(), timeout)
