"""The local server as an object: build the tornado app, start, serve, stop cleanly.

``LocalServer(settings)`` owns one data directory (guarded by a lock file, so two servers
never share one). ``await server.start()`` binds, recovers jobs left by a previous run,
loads plugins and writes ``<data-dir>/server.json`` (``{"pid", "url", "tasks"}``, the last
the folder of task folders, atomically);
``await server.stop()`` stops accepting requests, interrupts running tasks (their jobs
end CANCELLED with an info saying the server stopped), and removes ``server.json``.
``server.run()`` does all of it in the foreground until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import fcntl
import inspect
import json
import logging
import os
import pwd
import signal
import time
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from everest_app.listener import GuardedHTTPServer
from everest_local.catalog import Catalog
from everest_local.core import Core
from everest_local.handlers import NotFoundHandler, api_routes
from everest_local.hooks import Hooks, load_plugins
from everest_local.recovery import recover
from everest_local.resources import Resources
from everest_local.settings import ServerSettings
from everest_local.task_users import release_tasks_root
from everest_local.web import routes as web_routes

log = logging.getLogger(__name__)

SERVER_JSON = "server.json"


class ServerBusyError(RuntimeError):
    """Another server already runs on this data directory."""


def make_app(core: Core) -> tornado.web.Application:
    """The tornado application: the REST API, then the web UI's routes."""
    routes: list[Any] = [*api_routes(core), *web_routes()]
    return tornado.web.Application(routes, default_handler_class=NotFoundHandler,
                                   default_handler_args={"core": core}, xsrf_cookies=False,
                                   nav_links=core.hooks.nav_links)


class LocalServer:
    """One Everest-compatible server over one data directory."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.data_dir: Path = settings.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog.with_builtins(settings.apps)
        self.resources = Resources.load(settings.resources)
        self._lock_fd: int | None = None
        self.core: Core | None = None
        self.http: tornado.httpserver.HTTPServer | None = None
        self.url = ""
        self.port = 0

    @property
    def hooks(self) -> Hooks:
        assert self.core is not None, "start() the server first"
        return self.core.hooks

    async def start(self) -> None:
        """Lock the data dir, bind, recover earlier jobs, load plugins, serve, write
        server.json. Raises :class:`ServerBusyError` if the data dir is in use and
        ``OSError`` if the port cannot be bound."""
        self._lock()
        s = self.settings
        sockets = tornado.netutil.bind_sockets(s.port, address=s.host)
        self.port = sockets[0].getsockname()[1]
        host = "127.0.0.1" if s.host in ("", "0.0.0.0") else s.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        self.url = f"http://{host}:{self.port}"
        core = self.core = Core(s, self.catalog, self.resources)
        core.task_accounts.check(core.store.user_count(), _account_name())
        self._protect_data_dir(core)
        core.url = self.url
        core.task_url = (s.public_url or self.url).rstrip("/")
        core.store.purge_expired_tokens(time.time())
        load_plugins(self, s.plugins)
        core.executor.start()
        recover(core.executor)
        self.http = GuardedHTTPServer(  # out of descriptors: pause, not spin
            make_app(core), max_body_size=s.max_body_size, max_buffer_size=s.max_body_size,
            idle_connection_timeout=120)
        self.http.add_sockets(sockets)
        self._write_server_json()
        log.info("Everest-compatible local server at %s, web UI at %s/ (data in %s, %d slots)",
                 self.url, self.url, self.data_dir, s.slots)

    async def stop(self) -> None:
        """Stop serving, stop running tasks, remove server.json, release the data dir."""
        if self.http is not None:
            self.http.stop()
        if self.core is not None:
            await self.core.executor.shutdown()
            release_tasks_root(self.core.executor.tasks_root, self.data_dir)
            for fn in self.core.hooks.stop_callbacks:
                try:
                    out = fn()
                    if inspect.isawaitable(out):
                        await out
                except Exception:  # one plugin failing to stop must not block the rest
                    log.exception("a plugin's stop callback failed")
            self.core.store.close()
        if self.http is not None:
            await self.http.close_all_connections()
        self._remove_server_json()
        self._unlock()
        log.info("local server stopped")

    def run(self) -> int:
        """Serve in the foreground until SIGINT/SIGTERM; returns the exit code."""
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("stopping: interrupting running tasks")
        await self.stop()
        return 0

    # -- the data dir's lock and server.json ------------------------------------------------

    def _protect_data_dir(self, core: Core) -> None:
        """The data dir is the server's alone: 0700, or 0711 when tasks run as other
        accounts (they pass through it to their own folders; everything in it is 0700 or
        0600, so they reach nothing else)."""
        os.chmod(self.data_dir, 0o711 if core.task_accounts.switching else 0o700)
        for folder in (self.data_dir / "files",):
            if folder.exists():
                os.chmod(folder, 0o700)

    def _lock(self) -> None:
        fd = os.open(self.data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = read_server_json(self.data_dir) or {}
            raise ServerBusyError(f"another local server uses {self.data_dir} "
                                  f"(pid {other.get('pid', '?')}, {other.get('url', '?')})"
                                  ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write_server_json(self) -> None:
        path = self.data_dir / SERVER_JSON
        tmp = path.with_name(f".{SERVER_JSON}.{os.getpid()}.tmp")
        tasks = str(self.core.executor.tasks_root) if self.core else None
        tmp.write_text(json.dumps({"pid": os.getpid(), "url": self.url, "tasks": tasks}))
        os.replace(tmp, path)

    def _remove_server_json(self) -> None:
        info = read_server_json(self.data_dir)
        if info and info.get("pid") == os.getpid():
            (self.data_dir / SERVER_JSON).unlink(missing_ok=True)


def _account_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def read_server_json(data_dir: str | Path) -> dict[str, Any] | None:
    """``{"pid", "url"}`` of the server on ``data_dir``, or None when there is none."""
    try:
        data = json.loads((Path(data_dir) / SERVER_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def server_running(data_dir: str | Path) -> bool:
    """True when a server holds the lock of ``data_dir`` (so server.json is current)."""
    path = Path(data_dir) / "server.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def stop_server(data_dir: str | Path, timeout: float = 60.0) -> bool:
    """Ask the server on ``data_dir`` to stop (SIGTERM) and wait for it to exit.

    Returns False when no server runs there (a stale server.json is removed). Raises
    ``TimeoutError`` if it is still running after ``timeout`` seconds.
    """
    info = read_server_json(data_dir)
    if not server_running(data_dir) or not info or not isinstance(info.get("pid"), int):
        (Path(data_dir) / SERVER_JSON).unlink(missing_ok=True)
        return False
    pid = info["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while server_running(data_dir):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the local server (pid {pid}) did not stop in {timeout:g} s")
        time.sleep(0.1)
    return True
