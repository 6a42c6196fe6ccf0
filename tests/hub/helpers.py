"""A real JupyterHub for the spawner tests: ``jupyterhub`` as a process with npm's
configurable-http-proxy, EverestSpawner through its entry point, in front of a local
server and a relay process of its own (:class:`HubStack`); and its REST API as a test
service (:class:`HubApi`)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from everest_app.client import EverestClient
from everest_local.auth import add_user
from tests.harness.processes import child_env, free_port
from tests.harness.relay import RelayProcess
from tests.harness.server import ServerProcess, password_for
from tests.session.helpers import wait_for

SERVICE_USER = "hubservice"  # the Everest account of the hub's service token
PROFILES = [
    {"display_name": "This machine, 1 hour", "slug": "hour", "time_limit": 3600,
     "default": True},
    {"display_name": "This machine, 10 minutes", "slug": "short", "time_limit": 600},
    {"display_name": "Nowhere", "slug": "nowhere", "resource": "0" * 24},  # no such resource
    {"display_name": "Broken", "slug": "broken", "packages": ["/nonexistent/nothing.whl"]},
]

# The hub itself: loopback ports, its files in its folder, the test's "driver" service.
HUB_BASE_CONFIG = """\
import json
c = get_config()  # noqa: F821
s = json.loads({settings!r})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = s["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = s["hub_port"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % s["proxy_api_port"]
c.ConfigurableHTTPProxy.auth_token = s["proxy_token"]
c.ConfigurableHTTPProxy.pid_file = s["dir"] + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + s["dir"] + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = s["dir"] + "/cookie_secret"
c.JupyterHub.pid_file = s["dir"] + "/jupyterhub.pid"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.allow_named_servers = True
# answer 202 and stream progress even for quick spawns
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.services = [{{"name": "driver", "api_token": s["driver_token"]}}]
c.JupyterHub.load_roles = [{{"name": "driver", "services": ["driver"], "scopes": [
    "admin:users", "admin:servers", "access:servers", "read:users"]}}]
"""

# What a hub admin writes for Everest (see docs/jupyterhub.md), with short test intervals.
EVEREST_CONFIG = """
c.JupyterHub.authenticator_class = "everest"
c.EverestAuthenticator.everest_url = s["everest_url"]

c.JupyterHub.spawner_class = "everest"
c.EverestSpawner.everest_url = s["everest_url"]
c.EverestSpawner.everest_token = s["service_token"]
c.EverestSpawner.relay_url = s["relay_url"]
c.EverestSpawner.hub_id = "testhub"
c.EverestSpawner.profiles = s["profiles"]
c.EverestSpawner.status_interval = 1.0
c.EverestSpawner.sweep_interval = s["sweep_interval"]
c.EverestSpawner.poll_interval = 2
c.EverestSpawner.http_timeout = 60
c.EverestSpawner.default_url = "/lab"
c.EverestSpawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": "2"}
"""


class HubProcess:
    """``jupyterhub`` on free ports in ``folder``, configured for EverestSpawner;
    ``start``/``stop``/``kill9`` keep the same ports and database. ``extra_config`` is
    appended to its configuration (:meth:`write_config` replaces the Everest part)."""

    def __init__(self, folder: Path, everest_url: str, relay_url: str, service_token: str,
                 hub_port: int, python: str = sys.executable, sweep_interval: float = 300,
                 extra_config: str = ""):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.port = free_port()
        self.hub_port = hub_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.driver_token = secrets.token_hex(16)
        self.config = folder / "jupyterhub_config.py"
        self.settings = {
            "port": self.port, "hub_port": hub_port, "proxy_api_port": free_port(),
            "proxy_token": secrets.token_hex(16), "dir": str(folder),
            "driver_token": self.driver_token}
        self.write_config(EVEREST_CONFIG + extra_config, everest_url=everest_url,
                          service_token=service_token, relay_url=relay_url,
                          profiles=PROFILES, sweep_interval=sweep_interval)
        self.log_path = folder / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None
        self.env = child_env(JUPYTERHUB_CRYPT_KEY=secrets.token_hex(32))

    def write_config(self, body: str, **settings: Any) -> None:
        """The configuration file: :data:`HUB_BASE_CONFIG`, then ``body`` (Python, with the
        settings as ``s``: the hub's own plus ``settings``)."""
        self.settings.update(settings)
        self.config.write_text(HUB_BASE_CONFIG.format(settings=json.dumps(self.settings))
                               + body)

    def start(self) -> HubProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "jupyterhub", "-f", str(self.config)], cwd=self.folder,
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or self._up(), 90, "the hub")
        assert self.proc.poll() is None, f"jupyterhub exited:\n{self.log()}"
        return self

    def _up(self) -> bool:
        try:
            return requests.get(self.url + "/hub/api/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the hub (its proxy too: the hub starts it in a session of its own)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stop_proxy()

    def kill9(self) -> None:
        """SIGKILL the hub alone: its proxy lives on (the next start replaces it)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _stop_proxy(self) -> None:
        pid_file = self.folder / "proxy.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-15000:]


class HubApi:
    """The hub's REST API as the ``driver`` service (admin of users and servers)."""

    def __init__(self, hub: HubProcess):
        self.hub = hub
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {hub.driver_token}"

    def __call__(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.http.request(method, self.hub.url + "/hub/api" + path, timeout=60, **kw)

    def user(self, name: str) -> dict[str, Any]:
        resp = self("GET", f"/users/{name}")
        if resp.status_code == 404:
            assert self("POST", f"/users/{name}").status_code == 201
            resp = self("GET", f"/users/{name}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def spawn(self, name: str, server: str = "", **options: Any) -> requests.Response:
        self.user(name)
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        return self("POST", path, json={"user_options": options} if options else {})

    def progress(self, name: str, server: str = "",
                 deadline: float = 180) -> Iterator[dict[str, Any]]:
        """The spawn's progress events as the spawn page gets them, until ready/failed;
        fails the test, with the events so far, when neither comes within ``deadline``
        seconds (the hub sends a keep-alive every 8 s; a stream silent for 60 s fails too)."""
        path = f"/users/{name}/servers/{server}/progress" if server else \
            f"/users/{name}/server/progress"
        events: list[dict[str, Any]] = []
        give_up = time.monotonic() + deadline
        what = f"{name}'s server {server!r} to be ready or failed"
        try:
            with self.http.get(self.hub.url + "/hub/api" + path, stream=True,
                               timeout=(10, 60)) as resp:
                assert resp.status_code == 200, resp.text
                for line in resp.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        event = json.loads(line[5:])
                        events.append(event)
                        yield event
                        if event.get("ready") or event.get("failed"):
                            return
                    if time.monotonic() > give_up:
                        raise AssertionError(f"timed out after {deadline:g} s waiting for "
                                             f"{what}; progress events: {events}")
        except requests.RequestException as exc:
            raise AssertionError(f"the progress stream broke waiting for {what} ({exc}); "
                                 f"progress events: {events}") from None
        raise AssertionError(f"the progress stream ended before {what}; progress events: "
                             f"{events}")

    def server(self, name: str, server: str = "") -> dict[str, Any] | None:
        return self.user(name).get("servers", {}).get(server)

    def wait_ready(self, name: str, server: str = "", timeout: float = 180) -> dict[str, Any]:
        return wait_for(lambda: (s := self.server(name, server)) and s.get("ready") and s,
                        timeout, f"{name}'s server {server!r} to be ready", interval=0.25)

    def stop(self, name: str, server: str = "") -> None:
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        resp = self("DELETE", path)
        assert resp.status_code in (202, 204), resp.text
        wait_for(lambda: self.server(name, server) is None, 120,
                 f"{name}'s server {server!r} to stop", interval=0.25)

    def proxied(self, path: str) -> str:
        return self.hub.url + path


class HubStack:
    """A local server of its own (``service_slots`` sessions at once), a relay forwarding
    to the hub's API, and the hub: started in that order, stopped in reverse. ``python``
    runs the hub and the local server (so the sessions' runner and single-user server),
    ``server_env`` is added to the local server's (so its tasks') environment and
    ``server_args`` to its command line; ``everest``
    is a client of the hub's service account."""

    def __init__(self, folder: Path, *, python: str = sys.executable, service_slots: int = 8,
                 sweep_interval: float = 300, extra_config: str = "",
                 server_env: dict[str, str] | None = None, server_args: list[str] = ()):
        self.folder = folder
        self.python = python
        self.server = ServerProcess(folder / "everest", service_slots=service_slots,
                                    python=python, env=server_env, extra_args=server_args)
        add_user(self.server.data_dir, SERVICE_USER, password_for(SERVICE_USER))
        self.hub_port = free_port()
        self.sweep_interval = sweep_interval
        self.extra_config = extra_config  # appended to jupyterhub_config.py
        self.relay: RelayProcess | None = None
        self.hub: HubProcess | None = None
        self.everest: EverestClient | None = None

    def start(self) -> HubStack:
        self.server.start()
        self.relay = RelayProcess(self.folder / "relay", self.server.url, "--hub-api",
                                  f"127.0.0.1:{self.hub_port}", "--hub-service-account",
                                  SERVICE_USER).start()
        token = EverestClient.login(self.server.url, SERVICE_USER, password_for(SERVICE_USER),
                                    label="hub service")
        self.everest = EverestClient(self.server.url, token)
        self.hub = HubProcess(self.folder / "hub", self.server.url, self.relay.url, token,
                              self.hub_port, python=self.python,
                              sweep_interval=self.sweep_interval,
                              extra_config=self.extra_config).start()
        self.api = HubApi(self.hub)
        return self

    def relay_api(self) -> Any:
        """The relay's API as the hub's service account."""
        from tests.session.helpers import Api

        return Api(self.relay.url, self.everest.token)

    def live_jobs(self) -> list[Any]:
        """The service account's jobs that have not ended."""
        return [j for j in self.everest.jobs() if not j.is_done]

    def close(self) -> None:
        if self.hub:
            self.hub.stop()
        if self.relay:
            self.relay.stop()
        if self.everest:
            self.everest.close()
        self.server.close()  # kills any task left behind


def wait_job_state(everest: EverestClient, job_id: str, states: set[str],
                   timeout: float = 60) -> Any:
    return wait_for(lambda: (j := everest.job(job_id)) and str(j.state) in states and j,
                    timeout, f"job {job_id} to be one of {states}", interval=0.25)


def hub_jobs(everest: EverestClient, user: str, server: str = "") -> list[Any]:
    name = f"jupyterhub:testhub/{user}/{server}"
    return [j for j in everest.jobs() if j.name == name]
