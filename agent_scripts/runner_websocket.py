"""The tunnel's second way to the relay: SSH carried in a WebSocket on its HTTP(S) port.

Some networks let only HTTP(S) out (Binder, many university and company networks); there the
relay's SSH port cannot be reached but its API can. The relay accepts the same SSH connection
as binary WebSocket messages at ``ssh.websocket`` of the grant (``wss://relay/api/tunnel``),
with the same key pinning and refusals: only the way in differs.

- :class:`Route` picks the way before each connection attempt: the SSH port when it answers
  with an SSH version line within a few seconds, else the WebSocket (``choice`` forces one).
- :class:`WebSocket` is a minimal RFC 6455 client (binary messages, masked, ping answered)
  over asyncio streams, TLS for ``wss://`` checked like the ticket's redeem request, through
  the same HTTP proxy as that request when the environment names one (``CONNECT``).
- :func:`socket_through` gives asyncssh (``sock=``) a socket whose bytes go through one.
- Run as ``python runner_websocket.py FILE`` it is OpenSSH's ``ProxyCommand``: it reads the
  URL from FILE (a file of the tunnel's private folder, so no URL ever reaches a shell) and
  copies bytes between the WebSocket and stdin/stdout until either side ends.

Python >= 3.8, standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import os
import select
import socket
import ssl
import struct
import sys
import threading
import urllib.parse
import urllib.request
from typing import Awaitable, Callable

log = logging.getLogger("session_runner.websocket")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
CHUNK = 1 << 20  # the most bytes one message carries from the local side
PIPE_SIZE = 1 << 20  # what the ProxyCommand asks of its pipes (Linux), so ssh writes more at once
PROBE_TIMEOUT = 5.0
ROUTES = ("auto", "ssh", "websocket")
_RUNNING: set = set()  # splices in flight


class WebSocketError(OSError):
    """The WebSocket could not be opened, or the peer broke the protocol."""


try:  # tornado's C masking, where the environment has it (JupyterLab brings tornado)
    from tornado.speedups import websocket_mask as _c_mask
except ImportError:  # pragma: no cover - depends on the resource
    _c_mask = None


@functools.lru_cache(maxsize=256)
def _xor_table(key: int) -> bytes:
    return bytes(b ^ key for b in range(256))


def _xor(data: bytes, mask: bytes) -> bytes:
    """``data`` masked with the 4-byte ``mask``: in C when tornado's speedups are importable;
    else small payloads by one big-integer XOR and large ones as four byte-strided
    ``translate`` passes (about 3x faster than the big integer at 64 KiB, all in C)."""
    n = len(data)
    if not n:
        return data
    if _c_mask is not None:
        return _c_mask(mask, data)
    if n < 2048:
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    out = bytearray(data)
    for i in range(4):
        out[i::4] = data[i::4].translate(_xor_table(mask[i]))
    return bytes(out)


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455, section 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + _xor(payload, mask)


def proxy_for(host: str, secure: bool) -> str:
    """The HTTP proxy to reach ``host`` through, as urllib (the ticket's redeem request)
    finds it: ``https_proxy``/``http_proxy`` and ``no_proxy`` from the environment (the
    registry on Windows, the system settings on macOS); empty for none."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get("https" if secure else "http", "")
    if not proxy or urllib.request.proxy_bypass(host):
        return ""
    return proxy if "://" in proxy else "http://" + proxy


def connect_through_proxy(proxy: str, host: str, port: int, timeout: float) -> socket.socket:
    """A socket to ``host:port`` through the HTTP proxy ``proxy`` (``CONNECT``, with basic
    authentication when the proxy URL has a user), blocking. Raises :class:`WebSocketError`."""
    parts = urllib.parse.urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise WebSocketError(f"proxy {proxy!r}: only http:// proxies are supported")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if parts.username:
        user = urllib.parse.unquote(parts.username) + ":" + \
            urllib.parse.unquote(parts.password or "")
        head += "Proxy-Authorization: Basic " + \
            base64.b64encode(user.encode("utf-8")).decode("ascii") + "\r\n"
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout)
    except OSError as exc:
        raise WebSocketError(f"proxy {parts.hostname}: {exc}") from None
    try:
        sock.sendall((head + "\r\n").encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer:  # the proxy says nothing more until we speak
            chunk = sock.recv(1)
            if not chunk or len(answer) > 16384:
                raise WebSocketError(f"proxy {parts.hostname}: no answer to CONNECT")
            answer += chunk
    except OSError as exc:
        sock.close()
        raise WebSocketError(f"proxy {parts.hostname}: {exc}") from None
    status = answer.split(b"\r\n", 1)[0].decode("latin-1")
    if status.split(" ")[1:2] != ["200"]:
        sock.close()
        raise WebSocketError(f"proxy {parts.hostname} refused CONNECT {target}: {status}")
    sock.settimeout(None)
    return sock


class WebSocket:
    """A client WebSocket carrying a byte stream in binary messages.

    :meth:`connect` opens it; :meth:`recv` returns the next bytes (``b""`` once closed);
    :meth:`send` queues bytes; :meth:`close` says goodbye.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        self._closed = False

    @classmethod
    async def connect(cls, url: str, timeout: float = 15.0,
                      context: ssl.SSLContext | None = None) -> WebSocket:
        """Open ``url`` (``ws://`` or ``wss://``); raises :class:`WebSocketError`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise WebSocketError(f"not a WebSocket URL: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        if secure and context is None:
            context = ssl.create_default_context()
        tls = {"ssl": context, "server_hostname": parts.hostname} if secure else {}
        proxy = proxy_for(parts.hostname, secure)
        try:
            if proxy:
                sock = await asyncio.get_event_loop().run_in_executor(
                    None, connect_through_proxy, proxy, parts.hostname, port, timeout)
                opened = asyncio.open_connection(sock=sock, limit=4 * CHUNK, **tls)
            else:
                opened = asyncio.open_connection(parts.hostname, port, limit=4 * CHUNK,
                                                 ssl=context if secure else None)
            reader, writer = await asyncio.wait_for(opened, timeout)
        except asyncio.TimeoutError:
            raise WebSocketError(f"{url}: no connection in {timeout:g} s") from None
        except OSError as exc:
            raise WebSocketError(f"{url}: {exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        host = parts.netloc.rpartition("@")[2]
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "User-Agent: everest-jupyter-runner\r\n".encode("ascii")
                     + b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, OSError) as exc:
            writer.close()
            raise WebSocketError(f"{url}: no WebSocket answer ({exc or 'timed out'})") from None
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:] if line)}
        expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode("ascii")
        if lines[0].split(" ")[1:2] != ["101"] or headers.get("sec-websocket-accept") != \
                expected:
            writer.close()
            raise WebSocketError(f"{url}: the server did not accept the WebSocket "
                                 f"({lines[0][:100]})")
        return cls(reader, writer)

    async def recv(self) -> bytes:
        """The next bytes from the peer; ``b""`` when the WebSocket closed."""
        while not self._closed:
            try:
                b1, b2 = await self._reader.readexactly(2)
                length = b2 & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await self._reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await self._reader.readexactly(8))[0]
                mask = await self._reader.readexactly(4) if b2 & 0x80 else b""
                payload = await self._reader.readexactly(length)
            except (asyncio.IncompleteReadError, OSError):
                self._closed = True
                return b""
            if mask:
                payload = _xor(payload, mask)
            opcode = b1 & 0x0F
            if opcode in (0x0, 0x1, 0x2):  # continuation, text, binary: all part of the stream
                if payload:
                    return payload
            elif opcode == 0x8:  # close: answer it, then the stream is over
                self._send_close(payload[:2])
                self._closed = True
            elif opcode == 0x9:  # ping
                self._writer.write(frame(0xA, payload))
        return b""

    def send(self, data: bytes) -> None:
        """Queue ``data`` as one binary message (see :meth:`drain`)."""
        if not self._closed:
            self._writer.write(frame(0x2, data))

    async def drain(self) -> None:
        await self._writer.drain()

    def _send_close(self, code: bytes = b"") -> None:
        if not self._writer.is_closing():
            self._writer.write(frame(0x8, code or struct.pack("!H", 1000)))

    async def close(self) -> None:
        """Send a close frame (if still open) and close the connection."""
        if not self._closed:
            self._closed = True
            self._send_close()
        if not self._writer.is_closing():
            self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 5)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            pass


async def splice(ws: WebSocket, read: Callable[[], Awaitable[bytes]],
                 write: Callable[[bytes], Awaitable[None]],
                 close: Callable[[], None]) -> None:
    """Copy bytes both ways between ``ws`` and a local stream until either side ends."""
    async def up() -> None:
        try:
            while True:
                data = await read()
                if not data:
                    break
                ws.send(data)
                await ws.drain()
        except OSError:
            pass
        await ws.close()

    async def down() -> None:
        try:
            while True:
                data = await ws.recv()
                if not data:
                    break
                await write(data)
        except OSError:
            pass
        close()

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await ws.close()
        close()


async def socket_through(url: str, timeout: float = 15.0) -> socket.socket:
    """A connected socket for asyncssh's ``sock=``: what is written to it goes to the
    WebSocket at ``url`` and back (a socket pair spliced on the running loop until either
    side closes). Raises :class:`WebSocketError`."""
    ws = await WebSocket.connect(url, timeout)
    mine, theirs = socket.socketpair()
    theirs.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=theirs, limit=4 * CHUNK)

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    task = asyncio.ensure_future(splice(ws, lambda: reader.read(CHUNK), write, writer.close))
    _RUNNING.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_RUNNING.discard)
    return mine


async def ssh_port_answers(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``host:port`` opens and sends an SSH version line within ``timeout``."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return (await asyncio.wait_for(reader.readexactly(4), timeout)) == b"SSH-"
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()


class Route:
    """Which way the tunnel's next connection reaches the relay's SSH server.

    ``choice`` ``auto`` (the default) tries the SSH port first: :meth:`pick` returns
    ``"ssh"`` when the port answers with an SSH version line, else ``"websocket"`` when the
    relay offers one (else ``"ssh"`` all the same: a relay that is down answers neither).
    ``ssh`` or ``websocket`` force a way. :meth:`prefetch` starts the first probe early (the
    runner does it while JupyterLab boots). Once on the WebSocket, a reconnect does not wait
    for the SSH port: it goes back to it only when a probe running meanwhile found it
    answering. ``used`` is the last way picked.
    """

    def __init__(self, ssh_host: str, ssh_port: int, websocket_url: str,
                 choice: str = "auto", probe_timeout: float = PROBE_TIMEOUT):
        if choice not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {choice!r}")
        if choice == "websocket" and not websocket_url:
            raise ValueError("this relay offers no WebSocket entrance to its SSH server")
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.websocket_url = websocket_url
        self.choice = choice
        self.probe_timeout = probe_timeout
        self.used = ""
        self._probe: asyncio.Future | None = None

    def prefetch(self) -> None:
        if self.choice == "auto" and self.websocket_url and self._probe is None:
            self._probe = asyncio.ensure_future(
                ssh_port_answers(self.ssh_host, self.ssh_port, self.probe_timeout))

    async def pick(self) -> str:
        if self.choice != "auto":
            way = self.choice
        elif not self.websocket_url:
            way = "ssh"
        else:
            self.prefetch()
            if self.used == "websocket" and not self._probe.done():
                way = "websocket"  # no waiting on a port that did not answer last time;
                # the probe goes on, for the next connection
            else:
                probe, self._probe = self._probe, None
                way = "ssh" if await probe else "websocket"
        if way != self.used:
            if way == "websocket":
                log.info("tunnel goes through the WebSocket at %s (the SSH port %s:%d %s)",
                         self.websocket_url, self.ssh_host, self.ssh_port,
                         "is not used" if self.choice == "websocket" else "does not answer")
            elif self.used:
                log.info("tunnel goes to the SSH port %s:%d again", self.ssh_host,
                         self.ssh_port)
        self.used = way
        return way


def proxy_command(url: str, folder: str) -> str:
    """OpenSSH's ``ProxyCommand`` running this file as the WebSocket proxy for ``url``.

    The URL goes into a private file of ``folder``; the command holds only paths, quoted for
    the shell ``ssh`` runs it with, ``%`` doubled (``ssh`` expands ``%`` tokens).
    """
    path = os.path.join(folder, "websocket-url")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(url)
    argv = [sys.executable, os.path.abspath(__file__), path]
    if os.name == "nt":
        import subprocess

        command = subprocess.list2cmdline(argv)
    else:
        import shlex

        command = " ".join(shlex.quote(arg) for arg in argv)  # ssh adds the exec
    return command.replace("%", "%%")


def _grow_pipe(fd: int) -> None:
    """Ask Linux for a bigger pipe buffer on ``fd`` (fewer, larger reads and writes);
    nothing happens elsewhere or when refused."""
    if sys.platform.startswith("linux"):
        try:
            import fcntl

            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            pass


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _stdin_reader() -> Callable[[], Awaitable[bytes]] | None:
    """Reads of stdin on the running loop (no thread), where the platform allows it: each
    read takes all the pipe holds, up to :data:`CHUNK`, in one ``read`` straight into the
    bytes that are masked next (no stream buffer to copy through)."""
    if os.name == "nt":
        return None
    loop = asyncio.get_event_loop()
    fd = sys.stdin.fileno()
    try:
        os.set_blocking(fd, False)
    except OSError:
        return None

    async def read() -> bytes:
        while True:
            try:
                return os.read(fd, CHUNK)
            except BlockingIOError:
                pass
            except OSError:
                return b""
            readable = loop.create_future()
            loop.add_reader(fd, _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    return read


async def _stdio_proxy(url: str) -> None:
    """Copy between stdin/stdout and the WebSocket: stdin read on the loop where it can be
    (a pipe on POSIX), else in a thread (Windows), which works for the pipes ``ssh`` gives
    its ProxyCommand on Linux and Windows alike; stdout written blocking."""
    loop = asyncio.get_event_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    _grow_pipe(stdin)
    _grow_pipe(stdout)
    ws = await WebSocket.connect(url)
    read = await _stdin_reader()
    if read is None:
        incoming: asyncio.Queue = asyncio.Queue(maxsize=8)

        def read_stdin() -> None:
            while True:
                try:
                    data = os.read(stdin, CHUNK)
                except OSError:
                    data = b""
                asyncio.run_coroutine_threadsafe(incoming.put(data or b""), loop).result()
                if not data:
                    return

        threading.Thread(target=read_stdin, daemon=True).start()
        read = incoming.get

    async def write(data: bytes) -> None:
        view = memoryview(data)
        while view:  # writes to a pipe may be partial
            try:
                view = view[os.write(stdout, view):]
            except BlockingIOError:  # stdout shares stdin's (now non-blocking) file
                select.select([], [stdout], [])

    await splice(ws, read, write, lambda: None)


def main(argv: list[str] | None = None) -> int:
    """``python runner_websocket.py URL_FILE``: the ProxyCommand (see the module doc)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: runner_websocket.py URL_FILE", file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8") as handle:
            url = handle.read().strip()
        asyncio.run(_stdio_proxy(url))
    except (OSError, ValueError) as exc:
        print(f"WebSocket to the relay: {exc}", file=sys.stderr)  # ssh shows it in its log
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
