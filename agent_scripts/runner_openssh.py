"""The tunnel through OpenSSH's ``ssh`` client, when the resource has one.

Same job and interface as :class:`runner_tunnel.Tunnel` — ask the relay for exactly the
granted remote forward to JupyterLab on loopback, trust only the relay's pinned host key,
stay connected, reconnect with backoff, stop when the relay refuses the key — but the bytes
go through OpenSSH's C implementation instead of asyncssh's Python: about a quarter of the
CPU per request on the runner's side (benchmarks/launch.py), which is most of what the
tunnel adds to each request.

The session's private key, the pinned host key and an empty config live in a private
folder (0700, files 0600) inside the task's working directory (outside the notebook folder)
for the session's life and are removed at the end — or with the working directory, if the
runner is killed; they never leave the resource. ``ssh`` gets an argument list, no shell,
``-F`` an empty config (the user's ``~/.ssh/config`` cannot change where it goes), no agent,
no password prompts. Through the relay's WebSocket (:mod:`runner_websocket`) ``ssh`` runs
that module as its ``ProxyCommand``.

Python >= 3.8, standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile

from runner_reconnect import ReconnectingTunnel
from runner_relay import Grant, SessionEnded, SessionKey
from runner_websocket import Route, proxy_command

log = logging.getLogger("session_runner.openssh")

HOST_ALIAS = "everest-jupyter-relay"
CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
           "aes128-ctr,aes256-ctr")
_REFUSED = ("Permission denied", "remote port forwarding failed",
            "Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")
# failures that say nothing about whether this ssh can work here
_NETWORK = ("Connection refused", "Connection reset", "Connection closed", "timed out",
            "No route to host", "Network is unreachable", "Could not resolve",
            "kex_exchange_identification", "Broken pipe", "WebSocket to the relay")


MALLOC_KEEP = 4 << 20  # buffers below this stay on the heap (see ssh_environment)


class TunnelUnusable(RuntimeError):
    """``ssh`` never got through in several tries: the runner falls back to asyncssh."""


def ssh_environment() -> dict[str, str]:
    """The runner's environment for ``ssh`` and its ProxyCommand, with glibc's malloc told
    to keep freed buffers of up to a few MiB (an explicit value the user set is kept).

    Both move the tunnel's bytes through buffers of hundreds of KiB; with glibc's defaults
    each such buffer is mapped fresh and given back when freed, so every byte costs a page
    fault on its way through. Keeping them measured the WebSocket route's ``ssh`` at about
    0.6x and its ProxyCommand at about 0.5x the CPU per GB (benchmarks/tunnel_route.py);
    other C libraries ignore the variables.
    """
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MALLOC_KEEP))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(4 * MALLOC_KEEP))
    return env


def find_ssh() -> str | None:
    """The ``ssh`` client on PATH, if any (``ssh.exe`` on Windows 10 and later)."""
    return shutil.which("ssh")


class OpenSSHTunnel(ReconnectingTunnel):
    """The runner's side of the relay tunnel, through ``ssh -N -R`` (see the module doc).

    :meth:`usable` checks that this ``ssh`` accepts every option (``ssh -G``: parse only).
    ``connects``/``disconnects`` count what happened, for the summary. If ``ssh`` fails
    ``give_up_after`` times in a row, before it ever authenticated and not for a network
    reason (a local ``ssh`` that cannot work here: key file permissions on Windows, say),
    :meth:`run` raises
    :class:`TunnelUnusable` so the runner can use asyncssh instead. ``hub_port`` (hub
    mode): also ``-L`` forward ``127.0.0.1:hub_port`` to the grant's hub API address.
    """

    def __init__(self, grant: Grant, key: SessionKey, local_port: int, ssh: str, workdir: str,
                 route: Route, min_delay: float = 0.2, max_delay: float = 10.0,
                 give_up_after: int = 3, hub_port: int | None = None):
        super().__init__(min_delay, max_delay)
        self.grant = grant
        self.route = route
        self.local_port = local_port
        self.hub_port = hub_port
        self.ssh = ssh
        self.give_up_after = give_up_after
        self._failures = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._dir = tempfile.mkdtemp(prefix=".tunnel-", dir=workdir)
        os.chmod(self._dir, 0o700)
        self._key = self._private_file("id_ed25519", key.private_openssh)
        self._known = self._private_file("known_hosts",
                                         f"{HOST_ALIAS} {grant.host_key}\n".encode())
        self._config = self._private_file("config", b"")

    def _private_file(self, name: str, data: bytes) -> str:
        path = os.path.join(self._dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return path

    def _options(self) -> list[str]:
        options = {
            "BatchMode": "yes", "IdentitiesOnly": "yes", "IdentityFile": self._key,
            "IdentityAgent": "none", "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no",
            "GSSAPIAuthentication": "no", "HostKeyAlias": HOST_ALIAS,
            "UserKnownHostsFile": self._known, "GlobalKnownHostsFile": self._known,
            "StrictHostKeyChecking": "yes", "UpdateHostKeys": "no", "CheckHostIP": "no",
            "ExitOnForwardFailure": "yes", "ServerAliveInterval": "10",
            "ServerAliveCountMax": "3", "ConnectTimeout": "15", "Ciphers": CIPHERS,
            "Compression": "no", "ForwardAgent": "no", "ForwardX11": "no",
            "ControlMaster": "no", "ControlPath": "none", "PermitLocalCommand": "no",
            "LogLevel": "VERBOSE",
        }
        out = ["-F", self._config]
        for name, value in options.items():
            out += ["-o", f"{name}={value}"]
        return out

    def _command(self, *mode: str, websocket: bool = False) -> list[str]:
        g = self.grant
        local = []
        if self.hub_port is not None and g.hub_api is not None:
            local = ["-L", f"127.0.0.1:{self.hub_port}:{g.hub_api[0]}:{g.hub_api[1]}"]
        via = ["-o", "ProxyCommand=" + proxy_command(self.route.websocket_url, self._dir),
               "-o", "ProxyUseFdpass=no"] if websocket else []
        return [self.ssh, *mode, *self._options(), *via, "-p", str(g.ssh_port),
                "-l", g.username,
                "-R", f"{g.listen_host}:{g.listen_port}:127.0.0.1:{self.local_port}", *local,
                "--", g.ssh_host]

    def usable(self) -> bool:
        """True when this ``ssh`` understands the command (checked without connecting)."""
        try:
            proc = subprocess.run(self._command("-G"), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("ssh cannot be used (%s); using asyncssh", exc)
            return False
        if proc.returncode != 0:
            log.info("%s does not take the tunnel's options (%s); using asyncssh", self.ssh,
                     proc.stderr.strip()[-300:])
        return proc.returncode == 0

    async def _connect_once(self) -> bool:
        """One ``ssh`` run; returns whether it failed for a network reason."""
        websocket = await self.route.pick() == "websocket"
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self._command("-N", "-T", websocket=websocket), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=ssh_environment())
        refused = ""
        network = False
        try:
            async for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("Authenticated to"):
                    self.connects += 1
                    log.info("tunnel up (ssh): %s:%d on the relay -> 127.0.0.1:%d",
                             self.grant.listen_host, self.grant.listen_port, self.local_port)
                elif any(text in line for text in _REFUSED):
                    refused = line
                elif any(text in line for text in _NETWORK):
                    network = True
                if line and not line.startswith(("Authenticated", "Remote connections")):
                    log.info("ssh: %s", line)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            self._proc = None
        if refused and not self._closing:
            raise SessionEnded(f"the relay refused the session: {refused}")
        if not self._closing:
            log.warning("tunnel: ssh exited with code %s", code)
        return network

    def _dropped(self, network: bool) -> None:
        self._failures = 0 if self.connects or network else self._failures + 1
        if self._failures >= self.give_up_after:
            raise TunnelUnusable(f"ssh failed {self._failures} times before authenticating")

    async def close(self) -> None:
        """Stop reconnecting, end ``ssh`` and remove the key files."""
        await super().close()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

