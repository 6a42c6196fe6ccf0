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

A client's kept-alive connection, once tornado's handler has answered one request on it,
is served by a :class:`KeptConnection` bound to one channel: the next requests' heads are
read as bytes and checked and forwarded with the same functions the handler uses (so
credentials are stripped and answers filtered the same way), without tornado's request
objects per request; a request it does not serve as it is (another session, a relay route,
an upgrade, a session that ended, a page that may get the banner) goes back to tornado.

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
import enum
import hashlib
import hmac
import json
import logging
import re
from collections import defaultdict
from typing import Any

import asyncssh
from tornado import httputil, iostream, web
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
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

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes of what has already been read from the channel."""
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


def forwarded_headers(headers: httputil.HTTPHeaders | list[tuple[str, str]],
                      notebook_token: str | None, websocket: bool,
                      keep_authorization: bool = False) -> list[tuple[str, str]]:
    """The request headers a session receives: no hop-by-hop headers, no Everest cookie,
    no ``Authorization`` but the session's own notebook token (unless
    ``keep_authorization``). ``headers``: tornado's, or the (name, value) lines of a head."""
    out: list[tuple[str, str]] = []
    pairs = headers.get_all() if isinstance(headers, httputil.HTTPHeaders) else headers
    for name, value in pairs:
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
        upgrade = next((v for n, v in pairs if n.lower() == "upgrade"), "websocket") \
            if not isinstance(headers, httputil.HTTPHeaders) else headers.get("Upgrade",
                                                                              "websocket")
        out += [("Connection", "Upgrade"), ("Upgrade", upgrade)]
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


def is_page(method: str, accept: str, relay: Any) -> bool:
    """Is this request a browser navigating to a page (which may get the time-left
    banner, so is asked for unencoded)?"""
    return method == "GET" and "text/html" in accept and relay.config.time_warning > 0


class Refusal(enum.Enum):
    """Why a request for a session is not forwarded as it is (the handler answers it)."""

    NO_SESSION = "no live session"  # 404
    OTHER_HOST = "served at its own host"  # a redirect, or 404
    NOT_STARTED = "notebook not started"  # 502


def refusal(relay: Any, record: rs.SessionRecord | None, host_name: str) -> Refusal | None:
    """The one check before a request goes to ``record``'s notebook (tornado's handler and a
    kept connection both make it): the session is live, asked for on its own host when it
    has one (a lab session with ``session_host``), and its notebook has started. ``None``:
    forward it."""
    if record is None or not record.live:
        return Refusal.NO_SESSION
    hub = record.mode == rs.HUB_MODE
    own = relay.session_host(record.id)
    if own is not None and not hub and host_name != own:
        return Refusal.OTHER_HOST
    if not record.notebook_token and not hub:
        return Refusal.NOT_STARTED
    return None


def upstream_head(method: str, uri: str, headers: httputil.HTTPHeaders | list[tuple[str, str]],
                  record: rs.SessionRecord, *, websocket: bool, page: bool, length: str | None,
                  chunked: bool, peer: str, protocol: str) -> bytes:
    """The request head a session's notebook receives: the headers :func:`forwarded_headers`
    lets through (no ``Accept-Encoding`` for a ``page``, which may get the banner), the body's
    framing, and who asked."""
    lines = [f"{method} {uri} HTTP/1.1"]
    # a hub-mode server's credentials are the hub's (cookies and API tokens it issued)
    keep_auth = record.mode == rs.HUB_MODE
    for name, value in forwarded_headers(headers, record.notebook_token, websocket,
                                         keep_authorization=keep_auth):
        if not (page and name.lower() == "accept-encoding"):
            lines.append(f"{name}: {value}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    elif chunked:
        lines.append("Transfer-Encoding: chunked")
    lines.append(f"X-Forwarded-For: {peer}")
    lines.append(f"X-Forwarded-Proto: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


async def open_channel(relay: Any, record: rs.SessionRecord, peer: str,
                       allow_pooled: bool) -> Channel:
    """A channel to ``record``'s notebook: an idle pooled one when ``allow_pooled``, else a
    new one; raises a 502 ``ApiError`` when the session's tunnel is not there."""
    sid = record.id
    conn = await relay.routes.wait(sid, relay.config.hold)
    if conn is None:
        raise ApiError(502, "this session's notebook is not connected to the relay "
                            "right now; retry in a moment")
    if allow_pooled:
        chan = relay.proxy_pool.take(sid, conn)
        if chan is not None:
            return chan
    try:
        reader, writer = await conn.open_connection(
            relay.config.listen_host, record.listen_port, peer, 0, window=_WINDOW,
            max_pktsize=_MAX_PACKET)
    except (asyncssh.Error, OSError) as exc:
        log.info("session %s: could not open a channel (%s)", sid, exc)
        raise ApiError(502, "the session's notebook could not be reached through its "
                            "tunnel; retry in a moment") from None
    return Channel(conn, reader, writer)


async def read_answer_head(chan: Channel) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """The notebook's answer: status, reason, header lines (name, value) and the raw head.
    Raises :class:`UpstreamClosed` when the channel ends first, a 502 ``ApiError`` for a
    malformed or oversized head."""
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
        return await read_answer_head(chan)
    return start.code, start.reason, headers, raw


class Answer:
    """What the client receives of a notebook's answer head: its headers without hop-by-hop
    ones and without a ``Set-Cookie`` of the relay's or Everest's cookies, plus how the body
    is framed."""

    def __init__(self, method: str, status: int, reason: str,
                 headers: list[tuple[str, str]]):
        self.status = status
        self.reason = reason or httputil.responses.get(status, "Unknown")
        self.headers: list[tuple[str, str]] = []
        connection = transfer = ""
        self.length: str = ""
        for name, value in headers:
            low = name.lower()
            if low == "connection":
                connection += value.lower()
            elif low == "transfer-encoding":
                transfer += value.lower()
            elif low == "content-length":
                self.length = value
            elif low == "set-cookie" and _sets_our_cookie(value):
                continue
            elif low not in _HOP_BY_HOP:
                self.headers.append((name, value))
        self.reusable = "close" not in connection  # the channel, after this answer
        self.chunked = "chunked" in transfer
        self.no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200

    def size(self) -> int:
        """The body's ``Content-Length``; a 502 ``ApiError`` when it is not a number."""
        try:
            size = int(self.length)
        except ValueError:
            raise ApiError(502, "the session's notebook sent a malformed answer") from None
        if size < 0:
            raise ApiError(502, "the session's notebook sent a malformed answer")
        return size


@web.stream_request_body
class SessionProxyHandler(BaseHandler):
    """``/session/<id>/...``: every method, streamed to the session's notebook.

    A kept-alive HTTP/1.1 client connection whose request was answered here is then served
    by a :class:`KeptConnection` (tornado is not involved per request any more) until a
    request comes that it does not serve as it is, which goes back to tornado."""

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
        self.record = record = self._session()
        self.request.connection.set_max_body_size(relay.config.max_proxied_body)
        headers = self.request.headers
        self.websocket = (self.request.method == "GET"
                          and headers.get("Upgrade", "").lower() == "websocket")
        uri = self.request.uri or "/"
        root = self._root(record)
        self._time_url = root + record.base_url + deadlines.TIME_PATH
        # a page a browser navigates to may get the time-left banner: ask for it unencoded
        self._page = is_page(self.request.method, headers.get("Accept", ""), relay) \
            and not self.websocket
        if root:
            uri = uri[len(root):] or "/"
        length = headers.get("Content-Length")
        self._chunked_body = length is None and \
            "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._head = upstream_head(
            self.request.method, uri, headers, record, websocket=self.websocket,
            page=self._page, length=length, chunked=self._chunked_body,
            peer=self.request.remote_ip or "", protocol=self.request.protocol)
        self._has_body = length not in (None, "0") or self._chunked_body
        self.chan = await self._channel(allow_pooled=True)
        self.chan.writer.write(self._head)

    def _banner(self, body: bytes) -> bytes:
        """``body`` (a page of the session) with the time-left script in it."""
        url = f"{self._time_url}?key={self.relay.time_key(self.record.id)}"
        return deadlines.inject(body, deadlines.banner_script(
            url, self.relay.config.time_warning))

    @classmethod
    def find_record(cls, relay: Any, path_args: list[str], path: str
                    ) -> rs.SessionRecord | None:
        """The session a request routed here is for (live or not), if any."""
        return relay.store.get(path_args[0])

    def _session(self) -> rs.SessionRecord:
        """The live session this request is for; 404 when there is none. With
        ``session_host`` a lab session is served only on its own host: asked for on the
        relay's (shared) origin, a GET is sent there, anything else is a 404. A session
        whose notebook has not started yet is a 502."""
        record = self.find_record(self.relay, self.path_args, self.request.path)
        host = self.request.host_name.lower()
        why = refusal(self.relay, record, host)
        if why is None:
            assert record is not None
            return record
        if why is Refusal.NO_SESSION:
            raise self._no_session()
        assert record is not None
        if why is Refusal.OTHER_HOST:
            own = self.relay.session_host(record.id)
            if self.request.method in ("GET", "HEAD") and \
                    not host.endswith(own.split(".", 1)[1]):
                self.redirect(self.relay.session_origin(record) + self.request.uri)
                raise web.Finish()
            raise ApiError(404, f"session {record.id} is served at its own host, {own}")
        raise ApiError(502, "this session's notebook has not started yet; retry in a moment")

    def _no_session(self) -> ApiError:
        return ApiError(404, f"no live session {self.path_args[0]} on this relay")

    def _root(self, record: rs.SessionRecord) -> str:
        """What to remove from the request's path before it goes to the session."""
        return self.relay.session_root(record)

    async def _channel(self, allow_pooled: bool) -> Channel:
        return await open_channel(self.relay, self.record, self.request.remote_ip or "",
                                  allow_pooled and not self._has_body)

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
            status, reason, headers, raw = await read_answer_head(chan)
        except UpstreamClosed:
            chan.close()
            if not chan.pooled or self._has_body:
                raise ApiError(502, "the session's notebook closed the connection without "
                                    "answering") from None
            self.chan = chan = await self._channel(allow_pooled=False)  # stale pooled one
            chan.writer.write(self._head)
            try:
                status, reason, headers, raw = await read_answer_head(chan)
            except UpstreamClosed:
                chan.close()
                raise ApiError(502, "the session's notebook closed the connection without "
                                    "answering") from None
        if self.websocket and status == 101:
            await self._splice(chan, raw)
            return
        answer = Answer(self.request.method, status, reason, headers)
        if self._keepable():
            # from here on this client connection is served without tornado (KeptConnection)
            self.chan = None
            kept = KeptConnection(self, self.detach())
            await kept.serve(chan, answer)
            return
        self.set_status(answer.status, answer.reason)
        # the notebook's headers as they are (checked in read_answer_head), none of tornado's
        self._headers = out = httputil.HTTPHeaders()
        for name, value in answer.headers:
            out.add(name, value)
        reusable = answer.reusable
        if answer.no_body:
            pass
        elif answer.chunked:
            await self._copy_chunked(chan)
        elif answer.length:
            size = answer.size()
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

    def _keepable(self) -> bool:
        """May this client connection be taken over by a :class:`KeptConnection` once this
        answer starts? A kept-alive HTTP/1.1 connection (tornado would read the next request
        on it), for an answer that is not a page that may get the banner."""
        request = self.request
        connection = request.connection
        return (not self._page and not self.websocket and request.version == "HTTP/1.1"
                and request.headers.get("Connection", "").lower() != "close"
                and isinstance(connection, HTTP1Connection)
                and not connection.params.no_keep_alive
                and connection.stream is not None and not connection.stream.closed())

    def _injectable(self, status: int, headers: httputil.HTTPHeaders, size: int) -> bool:
        """Is this answer a page to add the time-left banner to? A browser's navigation,
        answered 200 with a small unencoded HTML document."""
        return (self._page and status == 200 and size <= _MAX_PAGE
                and headers.get("Content-Type", "").lower().startswith("text/html")
                and headers.get("Content-Encoding", "identity").lower() == "identity")

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


class _Route:
    """What tornado's router looks at in a request: its path and host (see
    :meth:`KeptConnection._record`)."""

    __slots__ = ("path", "host_name", "connection")

    def __init__(self, path: str, host_name: str):
        self.path = path
        self.host_name = host_name
        self.connection = None


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,15}\Z")
_ROUTES_KEPT = 256  # paths whose route a kept connection remembers


class BadRequest(Exception):
    """The client's request body is malformed or too large (answered 400, then closed)."""


class KeptConnection:
    """A kept-alive client connection served without tornado, once one request on it was
    routed, checked and answered (its answer head read) by :class:`SessionProxyHandler`.

    Each next request's head is read as bytes and parsed only as far as forwarding needs.
    Served here, on the channel kept from the previous answer: an HTTP/1.1 request with the
    same ``Host``, which the relay's own routes give to the same handler and session, that
    session passing :func:`refusal` (the handler's own check), not a page that may get the
    time-left banner, with no ``Upgrade``, ``Expect`` or ``Connection`` but keep-alive, and a
    body framed by one ``Content-Length`` within ``max_proxied_body`` or chunked. Its
    headers are forwarded as :func:`upstream_head` makes them (credentials stripped); its
    body and the answer's body move as bytes; the answer's head is filtered by
    :class:`Answer`. Anything else — another session, a relay route, a WebSocket upgrade, a
    session that ended, a tunnel that is not there, a stale channel — is handed back to
    tornado with its head unread, as if the connection had been tornado's all along, so it
    is answered exactly as a first request would be.
    """

    def __init__(self, handler: SessionProxyHandler, stream: iostream.IOStream) -> None:
        request = handler.request
        connection = request.connection
        assert isinstance(connection, HTTP1Connection)
        self.app = handler.application
        self.relay = handler.relay
        self.stream = stream
        self.handler_class = type(handler)
        self.session_id = handler.record.id
        self.root = handler._root(handler.record)
        self.host = request.headers.get("Host")
        self.host_name = request.host_name.lower()
        self.peer = request.remote_ip or ""
        self.protocol = request.protocol
        self.params = connection.params
        self.context = connection.context
        self.chan: Channel | None = None  # idle, kept for the next request
        self._waiting = False  # for the next request's head
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        # where the relay's (fixed) routes send a path on this host: asked once per path
        self._routes: dict[str, list[str] | None] = {}
        stream.set_nodelay(True)  # answers go out in one or two writes; none should wait

    async def serve(self, chan: Channel, answer: Answer) -> None:
        """Send the first request's answer, then serve the connection's next requests until
        the client closes it or a request goes back to tornado."""
        try:
            try:
                await self._answer(chan, answer)
                while (head := await self._next_head()) is not None:
                    if not await self._forward(head):
                        return
            except ApiError as exc:  # an answer refused before any of it was sent
                await self._error(exc.status_code, exc.message)
        except (iostream.StreamClosedError, asyncssh.Error, OSError, ValueError,
                asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.stream.close()  # the client or the notebook went away mid-answer
        finally:
            self._release()

    async def _next_head(self) -> bytes | None:
        """The next request's head; ``None`` once the client closed the connection, sent
        an oversized head, or stayed idle longer than the relay waits (its
        ``http_idle_timeout``, as tornado's)."""
        timeout = self.params.header_timeout
        if timeout:
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            if self._idle_timer is None:
                self._idle_timer = loop.call_later(timeout, self._idle_check)
        self._waiting = True
        try:
            return await self.stream.read_until_regex(
                b"\r?\n\r?\n", max_bytes=self.params.max_header_size)
        except (iostream.StreamClosedError, iostream.UnsatisfiableReadError):
            return None
        finally:
            self._waiting = False

    def _idle_check(self) -> None:
        """Close the connection once it has waited ``header_timeout`` seconds for a request
        (one timer, moved on when it fires early, rather than one per request)."""
        self._idle_timer = None
        if not self._waiting or self.stream.closed():
            return  # serving a request: the next wait arms the timer again
        loop = asyncio.get_running_loop()
        left = self._idle_since + self.params.header_timeout - loop.time()
        if left <= 0:
            self.stream.close()
        else:
            self._idle_timer = loop.call_later(left, self._idle_check)

    def _parse(self, head: bytes
               ) -> tuple[str, str, list[tuple[str, str]], int | None, bool] | None:
        """Method, target, header lines, Content-Length and whether the body is chunked,
        of a request served here; ``None`` for one tornado must answer."""
        if not head.endswith(b"\r\n\r\n"):
            return None
        text = head[:-4].decode("latin-1")
        if _BAD_HEAD.search(text.replace("\r\n", "")):
            return None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        if version != "HTTP/1.1" or method not in self.handler_class.SUPPORTED_METHODS or \
                target[:1] != "/":
            return None
        headers: list[tuple[str, str]] = []
        hosts: list[str] = []
        accept: list[str] = []
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.match(name):
                return None  # folded or malformed: tornado's to judge
            value = value.strip()
            low = name.lower()
            if low == "host":
                hosts.append(value)
            elif low == "content-length":
                if length is not None or not (value.isascii() and value.isdigit()):
                    return None
                length = int(value)
            elif low == "transfer-encoding":
                if chunked or value.lower() != "chunked":
                    return None
                chunked = True
            elif low in ("upgrade", "expect"):
                return None
            elif low == "connection":
                if value.lower() != "keep-alive":
                    return None
            elif low == "accept":
                accept.append(value)
            headers.append((name, value))
        if hosts != ([self.host] if self.host is not None else []):
            return None
        if chunked and length is not None:
            return None
        if length is not None and length > self.relay.config.max_proxied_body:
            return None
        if is_page(method, ",".join(accept), self.relay):
            return None
        return method, target, headers, length, chunked

    def _record(self, target: str) -> rs.SessionRecord | None:
        """The session a request for ``target`` goes to when it is this connection's and
        may be forwarded as it is (routed by the relay's own routes, then checked as the
        handler checks); ``None`` otherwise."""
        path = target.partition("?")[0]
        try:
            args = self._routes[path]
        except KeyError:
            args = self._route(path)
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            self._routes[path] = args
        if args is None:
            return None
        record = self.handler_class.find_record(self.relay, args, path)
        if record is None or record.id != self.session_id or \
                refusal(self.relay, record, self.host_name) is not None:
            return None
        return record

    def _route(self, path: str) -> list[str] | None:
        """The path arguments of a request for ``path`` on this connection's host when the
        relay's routes give it to this connection's handler; ``None`` when they do not."""
        route = self.app.find_handler(_Route(path, self.host_name))  # type: ignore[arg-type]
        if getattr(route, "handler_class", None) is not self.handler_class:
            return None
        return [a.decode("utf-8", "replace") if isinstance(a, bytes) else a
                for a in route.path_args]

    async def _forward(self, head: bytes) -> bool:
        """Serve one request (its head read); ``False`` when the connection is no longer
        this loop's (handed back to tornado, or closed)."""
        parsed = self._parse(head)
        record = self._record(parsed[1]) if parsed is not None else None
        if parsed is None or record is None:
            self._hand_back(head)
            return False
        method, target, headers, length, chunked = parsed
        has_body = chunked or bool(length)
        chan = self.chan
        self.chan = None
        if chan is not None and (has_body or not chan.usable or
                                 chan.conn is not self.relay.routes.current(record.id)):
            # a channel the notebook may have closed never carries a body
            self._give_back(chan)
            chan = None
        if chan is None:
            try:
                chan = await open_channel(self.relay, record, self.peer, not has_body)
            except ApiError:
                self._hand_back(head)  # the handler waits for the tunnel, or answers 502
                return False
        uri = (target[len(self.root):] or "/") if self.root else target
        try:
            chan.writer.write(upstream_head(
                method, uri, headers, record, websocket=False, page=False,
                length=None if length is None else str(length), chunked=chunked,
                peer=self.peer, protocol=self.protocol))
            if has_body:
                await self._copy_body(chan, length, chunked)
            status, reason, answer_headers, _ = await read_answer_head(chan)
        except UpstreamClosed:
            chan.close()
            if not has_body:
                self._hand_back(head)  # the handler tries again on a new channel
                return False
            await self._error(502, "the session's notebook closed the connection without "
                                   "answering")
            return False
        except ApiError as exc:
            chan.close()
            await self._error(exc.status_code, exc.message)
            return False
        except BadRequest:
            chan.close()
            await self.stream.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # as tornado
            self.stream.close()
            return False
        except BaseException:
            chan.close()
            raise
        await self._answer(chan, Answer(method, status, reason, answer_headers))
        return True

    async def _copy_body(self, chan: Channel, length: int | None, chunked: bool) -> None:
        """The request's body, from the client to the notebook as it comes."""
        stream, writer = self.stream, chan.writer
        if not chunked:
            left = length or 0
            while left > 0:
                data = await stream.read_bytes(min(left, _READ), partial=True)
                left -= len(data)
                writer.write(data)
                await writer.drain()
            return
        total = 0
        while True:
            line = await stream.read_until(b"\r\n", max_bytes=1024)
            size_text = line[:-2].split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.match(size_text):
                raise BadRequest()
            size = int(size_text, 16)
            total += size
            if total > self.relay.config.max_proxied_body:
                raise BadRequest()
            if size == 0:
                while await stream.read_until(b"\r\n", max_bytes=self.params.max_header_size) \
                        != b"\r\n":
                    pass  # trailers: not forwarded
                writer.write(b"0\r\n\r\n")
                return
            writer.write(b"%x\r\n" % size)
            left = size
            while left > 0:
                data = await stream.read_bytes(min(left, _READ), partial=True)
                left -= len(data)
                writer.write(data)
                await writer.drain()
            if await stream.read_bytes(2) != b"\r\n":
                raise BadRequest()
            writer.write(b"\r\n")

    async def _answer(self, chan: Channel, answer: Answer) -> None:
        """Pass the notebook's answer (its head read) on; keep the channel for the next
        request when it may carry one, else close it."""
        try:
            reusable = await self._send_answer(chan, answer)
        except BaseException:
            chan.close()
            raise
        if reusable and chan.usable:
            self.chan = chan
        else:
            chan.close()

    async def _send_answer(self, chan: Channel, answer: Answer) -> bool:
        """Write the answer's head and body; whether the channel may be reused."""
        status = answer.status
        if 100 <= status < 200:  # no Upgrade was asked for, and 100 is read past
            raise ApiError(502, "the session's notebook sent a malformed answer")
        lines = [f"HTTP/1.1 {status} {answer.reason}"]
        lines += [f"{name}: {value}" for name, value in answer.headers]
        reusable = answer.reusable
        if answer.no_body:
            if answer.length and status != 204:
                lines.append(f"Content-Length: {answer.length}")
            await self._write(_head_bytes(lines))
        elif answer.chunked:
            lines.append("Transfer-Encoding: chunked")
            await self._write(_head_bytes(lines))
            await self._copy_chunked(chan)
        elif answer.length:
            size = answer.size()
            lines.append(f"Content-Length: {size}")
            first = chan.take(size)  # what has come of the body: one write with the head
            await self._write(_head_bytes(lines) + first)
            await self._pipe(chan, size - len(first))
        else:  # the body ends when the channel does: chunked to the client
            reusable = False
            lines.append("Transfer-Encoding: chunked")
            await self._write(_head_bytes(lines))
            while data := await chan.read():
                self.stream.write(b"%x\r\n" % len(data))
                self.stream.write(data)
                await self._write(b"\r\n")
            await self._write(b"0\r\n\r\n")
        return reusable

    async def _write(self, data: bytes) -> None:
        """Pass ``data`` on to the client, waiting only while earlier bytes are still
        queued (so reading the next piece overlaps writing this one)."""
        written = self.stream.write(data)
        if self.stream.writing():
            await written

    async def _pipe(self, chan: Channel, left: int) -> None:
        while left > 0:
            data = await chan.read(min(left, _READ))
            if not data:
                raise iostream.StreamClosedError()
            left -= len(data)
            await self._write(data)

    async def _copy_chunked(self, chan: Channel) -> None:
        """A chunked answer body, chunk by chunk as it comes (trailers not forwarded)."""
        while True:
            size_line = await chan.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await chan.readuntil(b"\r\n")) != b"\r\n":
                    pass
                await self._write(b"0\r\n\r\n")
                return
            self.stream.write(b"%x\r\n" % size)
            await self._pipe(chan, size)
            if await chan.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunk")
            await self._write(b"\r\n")

    async def _error(self, status: int, message: str) -> None:
        """Answer ``{"message"}`` with ``status`` and close the connection."""
        body = json.dumps({"message": message}).encode()
        reason = httputil.responses.get(status, "Unknown")
        with contextlib.suppress(iostream.StreamClosedError):
            await self.stream.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        self.stream.close()

    def _give_back(self, chan: Channel) -> None:
        """An idle channel this connection no longer needs: to the pool while its session
        lives, else closed."""
        record = self.relay.store.get(self.session_id)
        if record is not None and record.live:
            self.relay.proxy_pool.give(self.session_id, chan)
        else:
            chan.close()

    def _release(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.chan is not None:
            self._give_back(self.chan)
            self.chan = None

    def _hand_back(self, head: bytes) -> None:
        """Give the connection back to tornado with ``head`` unread, as if it had been
        tornado's all along (a new HTTP/1.1 server connection on the same stream)."""
        self._release()
        stream = self.stream
        if stream.closed():
            return
        # tornado 6's buffer of bytes read from the socket and not yet consumed
        stream._read_buffer[:0] = head
        stream._read_buffer_size += len(head)
        stream.set_nodelay(False)  # tornado turns it on while it writes
        HTTP1ServerConnection(stream, self.params, self.context).start_serving(self.app)


def _head_bytes(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


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

    @classmethod
    def find_record(cls, relay: Any, path_args: list[str], path: str
                    ) -> rs.SessionRecord | None:
        return relay.store.hub_session_at(path)

    def _no_session(self) -> ApiError:
        return ApiError(404, f"no such relay endpoint or hub server: {self.request.path}")

    def _root(self, record: rs.SessionRecord) -> str:
        return ""

