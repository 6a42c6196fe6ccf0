"""Start JupyterLab on loopback, watch it, and shut it down cleanly with its kernels.

JupyterLab binds to 127.0.0.1 only (the tunnel is the way in), on a free port, with a token
the runner generates and passes through the environment (never on the command line), under
the session's base URL. Shutdown goes through ``POST api/shutdown`` first — the server then
stops every kernel itself — and falls back to SIGTERM, then kill.

In hub mode the server is ``jupyterhub-singleuser``: the hub's environment (from the relay's
grant) tells it its prefix, OAuth client and API token; :func:`hub_environment` points its
hub API at the runner's forward and gives it a concrete port (the single-user server takes
its port from ``JUPYTERHUB_SERVICE_URL`` and would try port 80 without one). The runner
authenticates its own requests with the server's hub API token.

Python >= 3.8, standard library only.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

log = logging.getLogger("session_runner.notebook")
_loopback = None  # see _opener


def _opener():
    """The opener for requests to the server: it is on loopback, so never through an HTTP
    proxy the environment names for the way out (the token would travel to the proxy, or
    the proxy cannot reach loopback at all). Made on first use: ``urllib.request`` is not
    imported before JupyterLab has started."""
    global _loopback
    if _loopback is None:
        import urllib.request

        _loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return _loopback


READY_POLL = 0.02  # seconds between looks while the server boots


class NotebookError(RuntimeError):
    """JupyterLab did not start or answer; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Linux only: have the kernel send SIGTERM to JupyterLab if the runner dies (SIGKILL),
    so a killed task never leaves a notebook server behind."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: not every libc has prctl
        pass


# The announcements plugin asks every new user whether to fetch "official Jupyter news";
# a session's notebook fetches none (news_url=None), so the question is pointless there
QUIET_PAGE_CONFIG = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}


def quiet_config_env(env: dict[str, str], folder: str) -> dict[str, str]:
    """``env`` with ``folder`` first on ``JUPYTER_CONFIG_PATH``, holding a JupyterLab page
    config that turns the news question off; the other config folders still count (page
    configs are merged)."""
    labconfig = os.path.join(folder, "labconfig")
    os.makedirs(labconfig, exist_ok=True)
    with open(os.path.join(labconfig, "page_config.json"), "w", encoding="utf-8") as handle:
        json.dump(QUIET_PAGE_CONFIG, handle)
    env = dict(env)
    rest = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([folder] + rest)
    return env


def lab_command(python: str, port: int, base_url: str, root_dir: str,
                default_url: str) -> list[str]:
    """The argument list that starts JupyterLab (never a shell line)."""
    cmd = [python, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.base_url={base_url}", f"--ServerApp.root_dir={root_dir}",
           # requests arrive through the relay with its Host header; the token guards them
           "--ServerApp.allow_remote_access=True",
           f"--LabApp.default_url={default_url}",
           # a resource may have no internet: no news or update checks from the page
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def singleuser_command(python: str, root_dir: str) -> list[str]:
    """The argument list that starts ``jupyterhub-singleuser`` (its port, prefix and hub
    come from the environment)."""
    cmd = [python, "-m", "jupyterhub.singleuser", f"--ServerApp.root_dir={root_dir}",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def _with_netloc(url: str, netloc: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme or "http", netloc, parts.path, parts.query,
                                    parts.fragment))


def hub_environment(hub_env: dict[str, str], port: int, root_dir: str,
                    api_port: int | None = None) -> dict[str, str]:
    """The hub's environment for its server, made true on this resource: the server's own
    address is ``127.0.0.1:port``; with ``api_port`` (a forward to the hub's API through
    the tunnel) the hub's API and activity URLs go through ``127.0.0.1:api_port``."""
    env = dict(hub_env)
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{port}{prefix}"
    env["JUPYTERHUB_ROOT_DIR"] = root_dir
    if api_port is not None:
        for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL"):
            if env.get(name):
                env[name] = _with_netloc(env[name], f"127.0.0.1:{api_port}")
    return env


class Notebook:
    """One JupyterLab server process.

    ``url`` is its loopback address including the base URL; ``token`` authenticates every
    request. Call :meth:`start`, then :meth:`wait_ready`; :meth:`stop` is safe to call twice.
    With ``hub_env`` it is a hub's single-user server instead (see the module docstring):
    ``token`` is then ignored and the hub's API token used; ``hub_api_port`` is the local
    end of the forward to the hub's API, if there is one.
    """

    def __init__(self, base_url: str, token: str, root_dir: str, log_path: str,
                 default_url: str = "/lab", env: dict[str, str] | None = None,
                 python: str | None = None, hub_env: dict[str, str] | None = None,
                 hub_api_port: int | None = None):
        self.base_url = base_url
        self.token = token
        self.root_dir = root_dir
        self.log_path = log_path
        self.default_url = default_url
        self.env = env
        self.python = python or sys.executable
        self.hub_env = hub_env
        self.hub_api_port = hub_api_port
        if hub_env is not None:
            self.token = hub_env.get("JUPYTERHUB_API_TOKEN", "")
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def start(self) -> None:
        """Start the server process (returns at once; see :meth:`wait_ready`)."""
        self.port = self.port or free_port()
        env = dict(os.environ if self.env is None else self.env)
        env = quiet_config_env(env, os.path.join(os.path.dirname(os.path.abspath(
            self.log_path)), ".jupyter-config"))
        env.pop("JUPYTER_TOKEN_FILE", None)
        if self.hub_env is None:
            env["JUPYTER_TOKEN"] = self.token
            cmd = lab_command(self.python, self.port, self.base_url, self.root_dir,
                              self.default_url)
            what = "JupyterLab"
        else:
            env.pop("JUPYTER_TOKEN", None)
            env.update(hub_environment(self.hub_env, self.port, self.root_dir,
                                       self.hub_api_port))
            cmd = singleuser_command(self.python, self.root_dir)
            what = "jupyterhub-singleuser"
        kwargs: dict[str, object] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            # its own session: an interrupt meant for the runner must not reach it directly;
            # the runner shuts it down in order
            kwargs["start_new_session"] = True
            if sys.platform.startswith("linux"):
                kwargs["preexec_fn"] = _die_with_parent
        log.info("starting %s on 127.0.0.1:%d%s", what, self.port, self.base_url)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env,
                                         cwd=self.root_dir, **kwargs)

    def request(self, method: str, path: str, timeout: float = 5.0) -> bytes:
        """Call the server's REST API at ``path`` (relative to the base URL) with the token.

        Raises ``urllib.error.URLError``/``OSError`` on failure, ``HTTPError`` on a 4xx/5xx.
        """
        import urllib.request

        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": "token " + self.token},
                                     data=b"" if method == "POST" else None)
        with _opener().open(req, timeout=timeout) as resp:
            return resp.read()

    def status(self) -> dict[str, object]:
        """The server's ``api/status`` document (started, last_activity, kernels, ...)."""
        return json.loads(self.request("GET", "api/status").decode("utf-8"))

    def exited(self) -> int | None:
        """The exit code once the process has ended, else ``None``."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Block until ``api/status`` answers 200.

        Raises :class:`NotebookError` if the process exits first or the time runs out.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.exited()
            if code is not None:
                raise NotebookError(f"JupyterLab exited with code {code} before answering; its log "
                                    f"ends with:\n{self.log_tail()}")
            if not self._listening():
                # a refused connect costs next to nothing: look often, so the moment it
                # answers is known within a few tens of milliseconds
                if time.monotonic() > deadline:
                    raise NotebookError(f"JupyterLab did not answer within {timeout:.0f} s")
                time.sleep(READY_POLL)
                continue
            try:
                # the single-user server checks tokens with the hub: before it is up, ask
                # its version endpoint (no authentication), as the hub itself does
                if self.hub_env is None:
                    self.status()
                else:
                    self.request("GET", "api")
                log.info("the server answers at 127.0.0.1:%d%s", self.port, self.base_url)
                return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise NotebookError(f"JupyterLab did not answer within {timeout:.0f} s")
            time.sleep(READY_POLL)

    def _listening(self) -> bool:
        """Whether something accepts connections on the server's port yet."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def busy_kernels(self) -> int:
        """How many kernels are executing right now (a long computation is not idleness).

        This request counts as activity for JupyterLab: ask it only when about to stop.
        """
        kernels = json.loads(self.request("GET", "api/kernels").decode("utf-8"))
        return sum(1 for k in kernels if k.get("execution_state") == "busy")

    def idle_seconds(self) -> float:
        """Seconds since JupyterLab last saw a user or a kernel do anything (``api/status``
        does not count as activity itself). Raises ``OSError``/``ValueError`` when the
        server does not answer."""
        last = parse_timestamp(str(self.status()["last_activity"]))
        now = datetime.datetime.now(datetime.timezone.utc)
        return max(0.0, (now - last).total_seconds())

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines JupyterLab printed."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 15.0) -> int | None:
        """Shut JupyterLab and its kernels down; return its exit code.

        Asks the server (``POST api/shutdown``: it stops the kernels itself), then SIGTERM
        (the server cleans up on it too, except on Windows), then kills it.
        """
        if self.proc is None:
            return None
        asked = False
        if self.proc.poll() is None:
            try:
                self.request("POST", "api/shutdown", timeout=5.0)
                log.info("asked JupyterLab to shut down")
                asked = True
            except (OSError, ValueError) as exc:
                log.warning("JupyterLab did not take the shutdown request (%s)", exc)
        for action in ("wait", "terminate", "kill"):
            if action == "wait" and not asked and os.name != "nt":
                # not answering (still booting, say): SIGTERM is a clean shutdown too, and
                # waiting for an exit nobody asked for would only delay the end
                continue
            if action == "terminate":
                if asked:
                    log.warning("JupyterLab still running after %.0f s: terminating it",
                                grace)
                self.proc.terminate()
            elif action == "kill":
                log.warning("JupyterLab ignores SIGTERM: killing it")
                self.proc.kill()
            try:
                return self.proc.wait(timeout=grace if action != "kill" else 10)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()


def parse_timestamp(text: str) -> datetime.datetime:
    """Parse Jupyter's ISO timestamps (``2024-01-02T03:04:05.123456Z``) on Python 3.8+."""
    text = text.strip().replace("Z", "+00:00")
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp

