"""Session runners for tests: the real one (``agent_scripts/session_runner.py``) as a task
would run it, and :class:`FakeRunner`, a test-controlled SSH peer that enrolls a key as a
runner does (for the relay's security and routing tests, where JupyterLab adds nothing)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import asyncssh
import requests

from tests.fixtures.waiting import WAIT
from tests.harness.processes import REPO, child_env, starting

RUNNER = REPO / "agent_scripts" / "session_runner.py"


def redeem(relay_url: str, ticket: str, public_key: str, token: str = "t" * 32,
           **extra: Any) -> requests.Response:
    body = {"ticket": ticket, "public_key": public_key, "notebook_token": token,
            "runner": {"hostname": "test"}, **extra}
    return requests.post(relay_url + "/api/tickets/redeem", json=body, timeout=30)


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def start_runner(workdir: Path, relay_url: str, ticket: str, *args: str,
                 env: dict[str, str] | None = None,
                 python: str = sys.executable) -> subprocess.Popen:
    """The session runner as a task would run it: its own process group, in ``workdir``."""
    starting("a session runner")
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(RUNNER), f"--relay={relay_url}", f"--ticket={ticket}", *args]
    with open(workdir / "runner.out", "ab") as out:
        return subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                env=env or child_env(), start_new_session=True)


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)


class FakeRunner:
    """A test-controlled SSH peer that enrolled a key like a runner does, on its own loop
    thread; for the relay's security and routing tests, where JupyterLab adds nothing."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, awaitable: Any, timeout: float = WAIT) -> Any:
        """Await ``awaitable`` on the peer's loop; its result or exception."""
        async def wait() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout)

    def close(self, closable: Any) -> None:
        """Close an SSH connection or listener on the peer's loop, and wait until it is."""
        async def close() -> None:
            closable.close()
            await closable.wait_closed()

        self.run(close())

    def connect(self, port: int, username: str, key: asyncssh.SSHKey, host_key: str,
                websocket: str | None = None, ca_certs: str | None = None
                ) -> asyncssh.SSHClientConnection:
        """Log in with ``key``, pinning ``host_key``: to the SSH port on 127.0.0.1, or through
        the relay's tunnel entrance at ``websocket`` (a ``ws(s)://`` URL)."""
        return self.dial(port, websocket, ca_certs, username=username, client_keys=[key],
                         known_hosts=([asyncssh.import_public_key(host_key)], [], []),
                         preferred_auth="publickey")

    def dial(self, port: int, websocket: str | None = None, ca_certs: str | None = None,
             **options: Any) -> asyncssh.SSHClientConnection:
        """``asyncssh.connect`` with ``options``, directly or over a WebSocket."""
        async def dial() -> asyncssh.SSHClientConnection:
            sock = await websocket_socket(websocket, ca_certs) if websocket else None
            return await asyncssh.connect("127.0.0.1", port, sock=sock, config=None,
                                          agent_path=None, **options)

        return self.run(dial())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


async def websocket_socket(url: str, ca_certs: str | None = None) -> socket.socket:
    """A socket whose bytes travel as binary WebSocket messages to ``url`` and back, for
    asyncssh's ``sock=`` (tornado's client on the caller's loop; an independent check of the
    relay's entrance, not the runner's own client)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import WebSocketClosedError, websocket_connect

    ws = await websocket_connect(HTTPRequest(url, ca_certs=ca_certs, connect_timeout=15))
    mine, theirs = socket.socketpair()
    theirs.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=theirs)

    async def up() -> None:
        try:
            while data := await reader.read(65536):
                await ws.write_message(data, binary=True)
        except (WebSocketClosedError, OSError):
            pass
        ws.close()

    async def down() -> None:
        while (message := await ws.read_message()) is not None:
            writer.write(message)
            try:
                await writer.drain()
            except OSError:
                break
        writer.close()

    loop = asyncio.get_running_loop()
    for pump in (up(), down()):
        loop.create_task(pump)
    return mine
