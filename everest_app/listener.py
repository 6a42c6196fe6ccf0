"""An HTTP listener that does not spin when the process is out of file descriptors: the local
server's and the relay's (in one process when the relay is the server's plugin, where one
spinning accept loop would starve both).

tornado's accept loop (:func:`tornado.netutil.add_accept_handler`) lets ``accept()``'s
``EMFILE``/``ENFILE`` escape: the listening socket stays readable (the connection waits in the
backlog), so the event loop calls it again at once, logging a traceback each time — a busy
loop that starves every other request and fills the log. :class:`GuardedHTTPServer` accepts
with :func:`accept_guarded` instead: on running out it logs once, gives back a reserved
descriptor to accept and close the connection at the head of the backlog (so it does not stay
readable forever), and stops accepting for ``pause`` seconds, during which open connections
finish or reach their deadlines and give their descriptors back.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import _DEFAULT_BACKLOG

log = logging.getLogger(__name__)

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


class _Reserve:
    """One descriptor held back, to be given up when the process has none left."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.take()

    def take(self) -> None:
        if self.fd is None:
            try:
                self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self.fd = None  # still out: retried after the next pause

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def accept_guarded(sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                   pause: float = 0.5) -> Callable[[], None]:
    """Like :func:`tornado.netutil.add_accept_handler` (returns the remover), but running out
    of file descriptors pauses accepting for ``pause`` seconds instead of spinning (see the
    module docstring)."""
    loop = IOLoop.current()
    reserve = _Reserve()
    state = {"removed": False, "paused": False, "shed": 0}

    def shed() -> None:
        """Out of descriptors: close the oldest waiting connection, then pause."""
        if state["shed"] == 0:
            log.warning("out of file descriptors: not accepting connections for %.1f s at "
                        "a time (raise the open-file limit, or fewer clients)", pause)
        reserve.release()
        try:
            conn, _ = sock.accept()
            conn.close()
            state["shed"] += 1
        except OSError:
            pass
        reserve.take()
        state["paused"] = True
        loop.remove_handler(sock)
        loop.call_later(pause, resume)

    def resume() -> None:
        state["paused"] = False
        reserve.take()
        if not state["removed"]:
            loop.add_handler(sock, accept, IOLoop.READ)

    def accept(fd: Any, events: int) -> None:
        for _ in range(_DEFAULT_BACKLOG):
            if state["removed"] or state["paused"]:
                return
            try:
                conn, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_FDS:
                    raise
                shed()
                return
            if state["shed"]:
                log.warning("accepting connections again (%d refused while out of file "
                            "descriptors)", state["shed"])
                state["shed"] = 0
            callback(conn, address)

    def remove() -> None:
        state["removed"] = True
        if not state["paused"]:
            loop.remove_handler(sock)
        reserve.release()

    loop.add_handler(sock, accept, IOLoop.READ)
    return remove


class GuardedHTTPServer(HTTPServer):
    """tornado's HTTP server accepting through :func:`accept_guarded`."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = accept_guarded(sock, self._handle_connection)
