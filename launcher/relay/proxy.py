"""Sessions served through the relay's own HTTP(S) port, under ``/session/<id>/``.

A user's request for ``/session/<id>/...`` is parsed by the relay's tornado server and sent
over an SSH channel that the relay opens to the session's granted forward (a
``forwarded-tcpip`` channel of whichever runner connection holds the route; see
:class:`launcher.relay.ssh.RouteTable`) — no TCP listener per session, so one port, one
certificate and one firewall rule serve every session. Bodies stream both ways (never
buffered whole); a WebSocket upgrade is forwarded, and once JupyterLab answers ``101`` the
two byte streams are spliced as they are.

What the relay removes on the way out: any ``Set-Cookie`` of Everest's ``access_token`` or
the relay's ``relay_token`` (a session must not sign its visitor in as someone else).

What the relay removes on the way in: Everest credentials. Browsers send cookies by host,
not by port, so a user signed in to the Everest web UI on the same host would otherwise
hand their ``access_token`` cookie to whatever session they open. The ``access_token`` and
``relay_token`` cookies are dropped, and an ``Authorization`` header passes only when it
carries that session's own notebook token (JupyterLab's credential); anything else (an
Everest bearer token) is dropped — except for a hub-mode session, whose credentials are the
hub's own tokens and cookies. Hop-by-hop headers are not forwarded.

What the relay adds on the way out: to a page a browser navigates to (a 200 HTML answer of
at most 4 MiB, asked for without compression), a small script that shows a banner when the
session is about to end (:mod:`launcher.relay.deadlines`); ``<prefix>_everest/time-left``,
which that script asks, is answered by the relay itself.

Idle upstream channels are kept (a few per session) so keep-alive requests do not pay a
channel open each; a channel that JupyterLab closed is never reused for a request with a
body, and a bodiless request that meets a closed pooled channel is retried once on a new one.

The data path is kept short because every byte of every session passes here (measured by
``benchmarks/tunnel_profile.py``): only the request and answer heads are parsed, bodies move
as the byte strings SSH delivers (up to ``_READ`` at a time, the next read overlapping the
previous write), channels advertise a large window and packet size so the runner's SSH
client sends big packets, and a successful proxied request is not access-logged at INFO
(JupyterLab logs its own requests; errors are still logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
from collections import defaultdict
from typing import Any

import asyncssh
from tornado import httputil, iostream, web
from tornado.log import access_log

from everest_app.json_api import TOKEN_COOKIE
from launcher.relay import deadlines
from launcher.relay import store as rs
from launcher.relay.handlers import PAGE_COOKIE, ApiError, BaseHandler

log = logging.getLogger(__name__)

SESSION_PATH = r"/session/([0-9a-f]{24})(/.*)?"
TIME_LEFT_PATH = r"/(?!api/).*/" + deadlines.TIME_PATH
_SESSION_PREFIX = re.compile(r"^/session/([0-9a-f]{24})/")
_HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
    "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Expect"))
_STRIPPED_COOKIES = frozenset({TOKEN_COOKIE, PAGE_COOKIE})
_CHUNK = 1 << 16  # what a spliced WebSocket reads from the client at a time
_READ = 1 << 20  # the most a body copy takes from the channel at a time
_WINDOW = 8 << 20  # each channel's SSH receive window ...
_MAX_PACKET = 1 << 18  # ... and the largest SSH packet it accepts (OpenSSH's own limit)
_POOL_PER_SESSION = 8
_MAX_HEAD = 64 << 10
# control characters other than tab may not appear in an answer head's lines
_BAD_HEAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_PAGE = 4 << 20  # larger HTML answers stream through without the banner


class UpstreamClosed(Exception):
    """The notebook side closed the channel before answering."""


class Channel:
    """One SSH channel to a session's notebook, used for one request at a time."""

    def __init__(self, conn: asyncssh.SSHServerConnection, reader: asyncssh.SSHReader,
                 writer: asyncssh.SSHWriter, pooled: bool = False):
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.pooled = pooled  # taken from the idle pool (may have been closed meanwhile)
        self._buf = b""  # read from the channel, not yet consumed

    @property
    def usable(self) -> bool:
        return not (self._buf or self.reader.at_eof() or self.writer.is_closing())

    async def _fill(self) -> None:
        data = await self.reader.read(_READ)
        if not data:
            raise asyncio.IncompleteReadError(self._buf, None)
        self._buf = self._buf + data if self._buf else data

    async def read_head(self) -> bytes:
        """Bytes up to and including the first empty line (an HTTP head)."""
        start = 0
        while True:
            end = self._buf.find(b"\r\n\r\n", start)
            if end >= 0:
                head, self._buf = self._buf[:end + 4], self._buf[end + 4:]
                return head
            if len(self._buf) > _MAX_HEAD:
                raise asyncio.LimitOverrunError("answer head too long", len(self._buf))
            start = max(0, len(self._buf) - 3)
            await self._fill()

    async def readuntil(self, separator: bytes) -> bytes:
        while (end := self._buf.find(separator)) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise asyncio.LimitOverrunError("line too long", len(self._buf))
            await self._fill()
        end += len(separator)
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    async def read(self, n: int = _READ) -> bytes:
        """Up to ``n`` bytes, as soon as some are there; ``b""`` at the end."""
        if self._buf:
            data, self._buf = self._buf[:n], self._buf[n:]
            return data
        return await self.reader.read(n)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ChannelPool:
    """Idle channels per session, each bound to the SSH connection that opened it."""

    def __init__(self) -> None:
        self._idle: dict[str, list[Channel]] = defaultdict(list)

    def take(self, session_id: str, conn: asyncssh.SSHServerConnection) -> Channel | None:
        idle = self._idle.get(session_id)
        while idle:
            chan = idle.pop()
            if chan.conn is conn and chan.usable:
                chan.pooled = True
                return chan
            chan.close()
        return None

    def give(self, session_id: str, chan: Channel) -> None:
        idle = self._idle[session_id]
        if len(idle) < _POOL_PER_SESSION and chan.usable:
            idle.append(chan)
        else:
            chan.close()

    def drop(self, session_id: str) -> None:
        for chan in self._idle.pop(session_id, []):
            chan.close()


def forwarded_headers(headers: httputil.HTTPHeaders, notebook_token: str | None,
                      websocket: bool, keep_authorization: bool = False
                      ) -> list[tuple[str, str]]:
    """The request headers a session receives: no hop-by-hop headers, no Everest cookie,
    no ``Authorization`` but the session's own notebook token (unless
    ``keep_authorization``)."""
    out: list[tuple[str, str]] = []
    for name, value in headers.get_all():
        low = name.lower()
        if low in _HOP_BY_HOP or low == "content-length":
            continue
        if low == "cookie":
            kept = [c for c in value.split(";")
                    if c.strip() and c.split("=", 1)[0].strip() not in _STRIPPED_COOKIES]
            if kept:
                out.append((name, ";".join(kept).strip()))
            continue
        if low == "authorization" and not keep_authorization and \
                not _is_notebook_token(value, notebook_token):
            continue
        out.append((name, value))
    if websocket:
        out += [("Connection", "Upgrade"), ("Upgrade", headers.get("Upgrade", "websocket"))]
    return out


def _sets_our_cookie(set_cookie: str) -> bool:
    """Whether a session's ``Set-Cookie`` would set Everest's or the relay's own cookie
    (a session signing its visitor in as someone else): such a header is dropped."""
    return set_cookie.split("=", 1)[0].strip().lower() in _STRIPPED_COOKIES


def _is_notebook_token(header: str, notebook_token: str | None) -> bool:
    scheme, _, value = header.strip().partition(" ")
    if not notebook_token or scheme.lower() not in ("token", "bearer"):
        return False
    a = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(notebook_token.encode()).digest()
    return hmac.compare_digest(a, b)


@web.stream_request_body
class SessionProxyHandler(BaseHandler):
    """``/session/<id>/...``: every method, streamed to the session's notebook."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def set_default_headers(self) -> None:
        pass  # the notebook's answer carries its own headers

    def compute_etag(self) -> None:
        return None

    async def prepare(self) -> None:
        self.chan: Channel | None = None
        self._page = False
        self._chunked_body = False
        self._head = b""
        relay = self.relay
        record = self._session()
        if not record.notebook_token and record.mode != rs.HUB_MODE:
            raise ApiError(502, "this session's notebook has not started yet; retry in a "
                                "moment")
        self.record = record
        self.request.connection.set_max_body_size(relay.config.max_proxied_body)
        headers = self.request.headers
        self.websocket = (self.request.method == "GET"
                          and headers.get("Upgrade", "").lower() == "websocket")
        uri = self.request.uri or "/"
        root = self._root(record)
        self._time_url = root + record.base_url + deadlines.TIME_PATH
        # a page a browser navigates to may get the time-left banner: ask for it unencoded
        self._page = (self.request.method == "GET" and not self.websocket
                      and "text/html" in headers.get("Accept", "")
                      and relay.config.time_warning > 0)
        if root:
            uri = uri[len(root):] or "/"
        lines = [f"{self.request.method} {uri} HTTP/1.1"]
        # a hub-mode server's credentials are the hub's (cookies and API tokens it issued)
        keep_auth = record.mode == rs.HUB_MODE
        for name, value in forwarded_headers(headers, record.notebook_token, self.websocket,
                                             keep_authorization=keep_auth):
            if not (self._page and name.lower() == "accept-encoding"):
                lines.append(f"{name}: {value}")
        length = headers.get("Content-Length")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._chunked_body = True
            lines.append("Transfer-Encoding: chunked")
        peer = self.request.remote_ip or ""
        lines.append(f"X-Forwarded-For: {peer}")
        lines.append(f"X-Forwarded-Proto: {self.request.protocol}")
        self._head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self._has_body = length not in (None, "0") or self._chunked_body
        self.chan = await self._channel(allow_pooled=True)
        self.chan.writer.write(self._head)

    def _banner(self, body: bytes) -> bytes:
        """``body`` (a page of the session) with the time-left script in it."""
        url = f"{self._time_url}?key={self.relay.time_key(self.record.id)}"
        return deadlines.inject(body, deadlines.banner_script(
            url, self.relay.config.time_warning))

    def _session(self) -> rs.SessionRecord:
        """The live session this request is for; 404 when there is none. With
        ``session_host`` a lab session is served only on its own host: asked for on the
        relay's (shared) origin, a GET is sent there, anything else is a 404."""
        session_id = self.path_args[0]
        record = self.relay.store.get(session_id)
        if record is None or not record.live:
            raise ApiError(404, f"no live session {session_id} on this relay")
        own = self.relay.session_host(session_id)
        if own is not None and record.mode != rs.HUB_MODE and \
                self.request.host_name.lower() != own:
            if self.request.method in ("GET", "HEAD") and \
                    not self.request.host_name.lower().endswith(own.split(".", 1)[1]):
                self.redirect(self.relay.session_origin(record) + self.request.uri)
                raise web.Finish()
            raise ApiError(404, f"session {session_id} is served at its own host, {own}")
        return record

    def _root(self, record: rs.SessionRecord) -> str:
        """What to remove from the request's path before it goes to the session."""
        return self.relay.session_root(record)

    async def _channel(self, allow_pooled: bool) -> Channel:
        relay, sid = self.relay, self.record.id
        conn = await relay.routes.wait(sid, relay.config.hold)
        if conn is None:
            raise ApiError(502, "this session's notebook is not connected to the relay "
                                "right now; retry in a moment")
        if allow_pooled and not self._has_body:
            chan = relay.proxy_pool.take(sid, conn)
            if chan is not None:
                return chan
        try:
            reader, writer = await conn.open_connection(
                relay.config.listen_host, self.record.listen_port,
                self.request.remote_ip or "", 0, window=_WINDOW, max_pktsize=_MAX_PACKET)
        except (asyncssh.Error, OSError) as exc:
            log.info("session %s: could not open a channel (%s)", sid, exc)
            raise ApiError(502, "the session's notebook could not be reached through its "
                                "tunnel; retry in a moment") from None
        return Channel(conn, reader, writer)

    async def data_received(self, chunk: bytes) -> None:
        if self.chan is None or self.chan.writer.is_closing():
            return  # the notebook stopped reading: its answer (or a 502) follows
        try:
            if self._chunked_body:
                self.chan.writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.chan.writer.write(chunk)
            await self.chan.writer.drain()
        except (asyncssh.Error, OSError):
            self.chan.close()

    async def _respond(self, *args: Any) -> None:
        chan = self.chan
        assert chan is not None
        if self._chunked_body and not chan.writer.is_closing():
            with contextlib.suppress(asyncssh.Error, OSError):
                chan.writer.write(b"0\r\n\r\n")
        try:
            status, reason, headers, raw = await self._read_head(chan)
        except UpstreamClosed:
            chan.close()
            if not chan.pooled or self._has_body:
                raise ApiError(502, "the session's notebook closed the connection without "
                                    "answering") from None
            self.chan = chan = await self._channel(allow_pooled=False)  # stale pooled one
            chan.writer.write(self._head)
            try:
                status, reason, headers, raw = await self._read_head(chan)
            except UpstreamClosed:
                chan.close()
                raise ApiError(502, "the session's notebook closed the connection without "
                                    "answering") from None
        if self.websocket and status == 101:
            await self._splice(chan, raw)
            return
        self.set_status(status, reason or httputil.responses.get(status, "Unknown"))
        # the notebook's headers as they are (checked in _read_head), none of tornado's
        self._headers = out = httputil.HTTPHeaders()
        connection = transfer = length = ""
        for name, value in headers:
            low = name.lower()
            if low == "connection":
                connection += value.lower()
            elif low == "transfer-encoding":
                transfer += value.lower()
            elif low == "content-length":
                length = value
            elif low == "set-cookie" and _sets_our_cookie(value):
                continue
            elif low not in _HOP_BY_HOP:
                out.add(name, value)
        reusable = "close" not in connection
        no_body = (self.request.method == "HEAD" or status in (204, 304)
                   or 100 <= status < 200)
        if no_body:
            pass
        elif "chunked" in transfer:
            await self._copy_chunked(chan)
        elif length:
            try:
                size = int(length)
            except ValueError:
                raise ApiError(502, "the session's notebook sent a malformed answer") from None
            if self._injectable(status, out, size):
                try:
                    body = self._banner(await chan.readexactly(size))
                except asyncio.IncompleteReadError:
                    raise iostream.StreamClosedError() from None
                if "Etag" in out:
                    del out["Etag"]  # another body than the notebook's
                out["Content-Length"] = str(len(body))
                await self._send(body)
            else:
                out["Content-Length"] = str(size)
                await self._copy_length(chan, size)
        else:
            reusable = False
            while data := await chan.read():
                await self._send(data)
        self.chan = None
        if reusable:
            self.relay.proxy_pool.give(self.record.id, chan)
        else:
            chan.close()
        self.finish()

    get = head = post = delete = patch = put = options = _respond

    def _injectable(self, status: int, headers: httputil.HTTPHeaders, size: int) -> bool:
        """Is this answer a page to add the time-left banner to? A browser's navigation,
        answered 200 with a small unencoded HTML document."""
        return (self._page and status == 200 and size <= _MAX_PAGE
                and headers.get("Content-Type", "").lower().startswith("text/html")
                and headers.get("Content-Encoding", "identity").lower() == "identity")

    async def _read_head(self, chan: Channel
                         ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """The answer's status, reason, header lines (name, value) and raw head."""
        try:
            raw = await chan.read_head()
        except asyncio.IncompleteReadError as exc:
            raise UpstreamClosed() from exc
        except asyncio.LimitOverrunError:
            raise ApiError(502, "the session's notebook sent an oversized answer head") from None
        except (asyncssh.Error, OSError):
            raise UpstreamClosed() from None
        text = raw[:-4].decode("latin-1")
        lines = text.split("\r\n")
        headers: list[tuple[str, str]] = []
        try:
            if _BAD_HEAD.search(text.replace("\r\n", "")):
                raise httputil.HTTPInputError("control character in the head")
            start = httputil.parse_response_start_line(lines[0])
            for line in lines[1:]:
                if line[:1] in (" ", "\t"):  # obsolete line folding: part of the last value
                    if not headers:
                        raise httputil.HTTPInputError("folded first header")
                    name, value = headers[-1]
                    headers[-1] = (name, f"{value} {line.strip()}")
                    continue
                name, colon, value = line.partition(":")
                if not colon or not name or name != name.strip():
                    raise httputil.HTTPInputError(f"malformed header line {line[:40]!r}")
                headers.append((name, value.strip()))
        except httputil.HTTPInputError:
            raise ApiError(502, "the session's notebook sent a malformed answer") from None
        if start.code == 100:  # an interim answer to Expect: the real one follows
            return await self._read_head(chan)
        return start.code, start.reason, headers, raw

    async def _send(self, data: bytes) -> None:
        """Pass ``data`` on to the client, waiting only while earlier bytes are still
        queued (so reading the next piece overlaps writing this one)."""
        self.write(data)
        flushed = self.flush()
        if self.request.connection.stream.writing():
            await flushed

    async def _copy_length(self, chan: Channel, length: int) -> None:
        left = length
        while left > 0:
            data = await chan.read(min(left, _READ))
            if not data:
                raise iostream.StreamClosedError()
            left -= len(data)
            await self._send(data)

    async def _copy_chunked(self, chan: Channel) -> None:
        reader = chan
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers: not forwarded
                return
            data = await reader.readexactly(size + 2)
            await self._send(data[:-2])

    async def _splice(self, chan: Channel, head: bytes) -> None:
        """Hand the client's connection over to the notebook's WebSocket, byte for byte."""
        self.chan = None
        stream = self.detach()
        # detached mid-request, the stream still has Nagle on: small frames (a kernel's
        # messages, keystrokes) would wait for the peer's delayed ACK
        stream.set_nodelay(True)
        await stream.write(head)

        async def client_to_notebook() -> None:
            with contextlib.suppress(iostream.StreamClosedError, asyncssh.Error, OSError):
                while True:
                    data = await stream.read_bytes(_CHUNK, partial=True)
                    chan.writer.write(data)
                    await chan.writer.drain()
            chan.close()

        async def notebook_to_client() -> None:
            with contextlib.suppress(iostream.StreamClosedError, asyncssh.Error, OSError):
                while data := await chan.read(_READ):
                    written = stream.write(data)
                    if stream.writing():
                        await written
            stream.close()

        await asyncio.gather(client_to_notebook(), notebook_to_client())

    def _log(self) -> None:
        # JupyterLab logs its own requests; an INFO line here per proxied request costs
        # about as much CPU as proxying it (benchmarks/tunnel_profile.py)
        if self.get_status() < 400:
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug("%d %s %.2fms", self.get_status(), self._request_summary(),
                                 1000.0 * self.request.request_time())
            return
        super()._log()

    def on_connection_close(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None

    def on_finish(self) -> None:
        if getattr(self, "chan", None) is not None:
            self.chan.close()
            self.chan = None


class TimeLeftHandler(BaseHandler):
    """``<session prefix>_everest/time-left?key=K``: the banner's question, answered by the
    relay itself (JupyterLab never sees it, so asking is no activity). The key the relay put
    into the session's page is the credential; a wrong one gets 403, a path that is not a
    live session's prefix 404. (Not the streaming proxy handler: an error there closes the
    connection, and these come every half minute.)"""

    def get(self) -> None:
        path = self.request.path
        match = _SESSION_PREFIX.match(path)
        record = self.relay.store.get(match.group(1)) if match else \
            self.relay.store.hub_session_at(path)
        root = self.relay.session_root(record) if record is not None and match else ""
        if record is None or not record.live or \
                path != root + record.base_url + deadlines.TIME_PATH:
            raise ApiError(404, f"no live session at {path[:-len(deadlines.TIME_PATH)]}")
        key = self.get_query_argument("key", "")
        if not hmac.compare_digest(self.relay.time_key(record.id).encode(),
                                   key.encode("utf-8", "replace")):
            raise ApiError(403, "wrong key for this session's time left")
        self.send(deadlines.time_left(record.runner))


class HubProxyHandler(SessionProxyHandler):
    """Any other path: a hub-mode session's server at its hub prefix (``/user/<name>/...``).

    JupyterHub's proxy forwards to the host and port of the URL a spawner returns, never
    its path, so the relay finds a hub-mode server by the prefix its requests carry. A
    prefix belongs to at most one live session (see ``POST /api/sessions``), and only its
    user (or a hub service account the relay trusts) may claim it.
    """

    def _session(self) -> rs.SessionRecord:
        record = self.relay.store.hub_session_at(self.request.path)
        if record is None:
            raise ApiError(404, f"no such relay endpoint or hub server: {self.request.path}")
        return record

    def _root(self, record: rs.SessionRecord) -> str:
        return ""

