"""EverestSpawner: each JupyterHub user's server runs as an Everest job, reached through the
relay even when the resource is behind NAT.

``start()`` creates a relay session in hub mode (labelled ``<hub_id>/<user>/<server>``,
carrying the hub's environment for the server, which the relay hands the session runner only
after it redeems its ticket), submits the ``jupyter-session`` application with only that
ticket as a secret, follows job and session until the server answers through the tunnel,
and returns the session's URL as the relay gives it. On the resource, the runner starts
``jupyterhub-singleuser`` on loopback and reaches the hub's API through its SSH connection
to the relay (or through ``hub_api_url``).

Contract points (see JupyterHub's spawner reference):

- the job's id and the session's id are kept on the spawner as soon as they exist, so a
  cancelled or timed-out start is cleaned up (``poll()`` says "running" while a job exists,
  so the hub calls ``stop()``);
- ``poll()`` never raises: an unknown state or an unreachable Everest count as running for
  ``poll_grace`` seconds; all spawners read one shared status cache (:mod:`launcher.hub.jobs`);
- ``stop()`` is idempotent; state is versioned;
- restart-safe: with no saved state (the hub died while a start was pending), ``poll()``
  finds the job by its name and cancels it; a periodic sweep cancels jobs of this hub that no
  spawner owns.

Admins: set ``JupyterHub.cleanup_servers = False`` so servers outlive hub restarts, and run
the relay as its own service (not a hub-managed service, which the hub stops on exit).
"""

from __future__ import annotations

import asyncio
import copy
import html
import logging
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate

from everest_app.states import JobState
from launcher.hub import profiles as prof
from launcher.hub.api import ApiError, JsonApi, path_part
from launcher.hub.jobs import JobCache, cache_for
from launcher.hub.sweep import Owners, cancel_job, sweep
from launcher.launch_options import LaunchOptions
from launcher.relay.state import SessionState
from launcher.session_start import Failure, Milestone, step

try:  # JupyterHub >= 6.0
    from jupyterhub.spawner import SpawnException as _SpawnException
except ImportError:  # JupyterHub 5.x
    _SpawnException = None

log = logging.getLogger(__name__)

STATE_VERSION = 1
JOB_PREFIX = "jupyterhub:"
_HUB_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_API_TOKEN")


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def spawn_failure(message: str, *, log_message: str | None = None,
                  reason: str = "everest", status: int = 400) -> Exception:
    """An exception whose ``message`` the user sees — on the error page and in the
    progress stream, which reads only ``jupyterhub_message`` — while the log gets
    ``log_message``, answered with HTTP ``status`` (503: Everest or the relay is
    unavailable; 502: the server's job failed; 4xx: what was asked cannot be done). A
    ``SpawnException`` on JupyterHub 6, an ``HTTPError`` on 5.x."""
    if _SpawnException is not None:
        exc: Exception = _SpawnException(message, reason=reason, status_code=status,
                                         log_message=log_message or message)
    else:
        exc = web.HTTPError(status, log_message or message)
    exc.jupyterhub_message = message
    exc.jupyterhub_html_message = html.escape(message)
    return exc


NOT_USED: dict[str, str] = {}
"""Spawner options EverestSpawner inherits and does not use, with why."""


def _not_used(name: str, why: str) -> Any:
    """``Spawner.<name>`` again, its help saying that it does nothing here and why."""
    trait = copy.copy(Spawner.class_traits()[name])
    trait.help = f"Not used by EverestSpawner: {why}. Setting it changes nothing."
    NOT_USED[name] = why
    return trait


class EverestSpawner(Spawner):
    """A single-user server as an Everest job (see the module docstring)."""

    everest_url = Unicode(
        "", config=True,
        help="""Address of the Everest (or everest-jupyter local server) that runs the
        jobs, e.g. ``https://everest.distcomp.org``.""")

    everest_token = Unicode(
        "", config=True,
        help="""A service token for the whole hub: every user's job is submitted with it
        (jobs are named ``jupyterhub:<hub_id>/<user>/<server>`` so each user's are
        recognisable). Leave empty with ``EverestAuthenticator``: each job is then submitted
        with the token of the signed-in user, kept in the encrypted ``auth_state``, so it
        belongs to that user and Everest's own access rules for resources apply. Defaults to
        the ``EVEREST_TOKEN`` environment variable of the hub.""")

    relay_url = Unicode(
        "", config=True,
        help="""The relay's API as the hub reaches it, e.g. ``http://127.0.0.1:8765``. The
        relay runs as its own service and needs ``--hub-api`` set to the hub's API address
        (as the relay reaches it) for servers behind NAT to reach the hub.""")

    relay_url_for_resources = Unicode(
        "", config=True,
        help="""The relay's address as the resources reach it, when it differs from
        ``relay_url`` (a public name, NAT). Default: what the relay says (its
        ``--public-url``, else the address the hub used).""")

    app = Unicode(
        "jupyter-session", config=True,
        help="""The id (or ``owner/alias``) of the ``jupyter-session`` application on that
        Everest.""")

    resources = List(
        Unicode(), config=True,
        help="""Everest resource ids the jobs may run on; empty lets Everest choose. A
        profile's ``resource`` replaces it.""")

    time_limit = Integer(
        8 * 3600, config=True,
        help="""Seconds a server may run before its job stops it (0: no limit of its own).
        A profile's ``time_limit`` replaces it.""")

    idle_timeout = Integer(
        0, config=True,
        help="""Seconds without activity after which the runner itself stops the server
        (0: never). Usually left to the hub's idle culler, which sees activity through the
        hub API forward like any other server.""")

    packages = List(
        Unicode(), config=True,
        help="""Extra pip requirements installed into the server's environment on the
        resource (the runner bootstraps JupyterLab and jupyterhub-singleuser when they are
        missing). A profile's ``packages`` are added.""")

    hub_api_url = Unicode(
        "", config=True,
        help="""The hub's API as the resources reach it directly, e.g.
        ``https://hub.example.org/hub/api``. Empty (the default): servers reach the hub API
        through their SSH connection to the relay, which forwards to its ``--hub-api``
        address — this works behind NAT and needs no public hub API.""")

    hub_id = Unicode(
        config=True,
        help="""Names this hub's jobs and relay sessions (``<hub_id>/<user>/<server>``), so
        they are found after a restart and told apart from other hubs on the same Everest
        account. Default: this machine's host name.""")

    profiles = List(
        Dict(), config=True,
        help="""Presets users choose from in the spawn form: a list of dicts with
        ``display_name`` (required), ``slug``, ``description``, ``resource`` (Everest
        resource id), ``time_limit`` (seconds), ``packages`` (list) and ``default``
        (bool). A choice must name one of them; nothing else passes. Example::

            c.EverestSpawner.profiles = [
                {"display_name": "Small VM, 2 h", "resource": "vm-small",
                 "time_limit": 7200, "default": True},
                {"display_name": "GPU node, 8 h", "resource": "gpu", "time_limit": 28800,
                 "packages": ["torch"]},
            ]
        """)

    status_interval = Float(
        10.0, config=True,
        help="""Seconds between listings of the jobs in the hub's shared status cache: all
        spawners of the hub read it, so Everest gets about one request per interval per
        account, however many servers run.""")

    poll_grace = Float(
        300.0, config=True,
        help="""Seconds ``poll()`` keeps reporting a server as running while Everest cannot
        be asked (or says something unknown) before it gives up on it.""")

    sweep_interval = Float(
        300.0, config=True,
        help="""Seconds between sweeps for jobs of this hub that no spawner owns (left by a
        crash); such a job, seen twice in a row, is cancelled. 0 switches the sweep off.""")

    stop_wait = Float(
        30.0, config=True,
        help="""Seconds ``stop()`` waits for a cancelled job to end.""")

    http_request_timeout = Float(
        10.0, config=True,
        help="""Seconds each request to Everest or the relay may take.""")

    workspaces = Bool(
        True, config=True,
        help="""Give each server its user's workspace as its JupyterLab root: ``<user>``, or
        ``<user>/<server name>`` for a named server. The relay keeps it across stop and
        start (and restores it on any resource); a failed final save is logged at stop.
        False: servers start empty and keep nothing (``docs/workspaces.md``).""")

    debug_progress = Bool(False, config=True, help="Log every progress event (debugging).")

    start_timeout = Integer(
        900, config=True,
        help="""Seconds a start may take, from the submission until the server answers
        through the relay: the job may wait in a resource's queue and the runner may
        install JupyterLab first (JupyterHub's own default is 60).""")

    # Inherited from Spawner, and doing nothing here: marked so --help-all says so, and
    # named in the log when a configuration sets them.
    cmd = _not_used("cmd", "the session runner starts jupyterhub-singleuser itself")
    args = _not_used("args", "the session runner chooses the server's arguments")
    ip = _not_used("ip", "the server listens on the resource's loopback, reached through "
                         "the relay")
    port = _not_used("port", "the runner picks a free loopback port on the resource")
    notebook_dir = _not_used("notebook_dir", "the server's root is the job's task folder")
    env_keep = _not_used("env_keep", "only JUPYTERHUB_* variables reach the server (the "
                                     "relay takes nothing else)")
    mem_limit = _not_used("mem_limit", "the resource and its Everest limits decide")
    mem_guarantee = _not_used("mem_guarantee", "the resource and its Everest limits decide")
    cpu_limit = _not_used("cpu_limit", "the resource and its Everest limits decide")
    cpu_guarantee = _not_used("cpu_guarantee", "the resource and its Everest limits decide")
    ssl_alt_names = _not_used("ssl_alt_names", "internal_ssl is refused; the relay's tunnel "
                                               "encrypts the way to the server")
    ssl_alt_names_include_local = _not_used("ssl_alt_names_include_local",
                                            "internal_ssl is refused")

    @default("hub_id")
    def _default_hub_id(self) -> str:
        return socket.gethostname().split(".")[0] or "jupyterhub"

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    @validate("profiles")
    def _check_profiles(self, proposal: dict) -> list:
        prof.parse_profiles(proposal["value"])  # raises with the reason
        return proposal["value"]

    _instances: weakref.WeakSet = weakref.WeakSet()
    _sweeper: asyncio.Task | None = None
    _warned_unused = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if not EverestSpawner._warned_unused:
            EverestSpawner._warned_unused = True
            given = sorted(name for section in ("Spawner", "EverestSpawner")
                           for name in self.config.get(section, {}) if name in NOT_USED)
            if given:
                self.log.warning("EverestSpawner does not use %s (set in the hub's "
                                 "configuration): they change nothing here",
                                 ", ".join(dict.fromkeys(given)))
        self.job_id: str | None = None
        self.session_id: str | None = None
        self._starting = False
        self._events: list[dict[str, Any]] = []
        self._last_known = time.monotonic()
        self._token: str | None = None
        EverestSpawner._instances.add(self)

    # -- names and clients ------------------------------------------------------------------

    @property
    def label(self) -> str:
        """``<hub_id>/<user>/<server>``: this server's relay session label and job name."""
        return f"{self.hub_id}/{self.user.name}/{self.name}"

    @property
    def job_name(self) -> str:
        return JOB_PREFIX + self.label

    async def _everest_token(self) -> str:
        """The user's token from ``auth_state`` (EverestAuthenticator), else the hub's."""
        if self._token:
            return self._token
        state = None
        try:
            state = await self.user.get_auth_state()
        except Exception as exc:  # noqa: BLE001 - no auth state is a normal case
            self.log.debug("no auth state for %s: %s", self.user.name, exc)
        token = (state or {}).get("everest_token") or self.everest_token or \
            self._env_token()
        if not token:
            raise spawn_failure(
                "This hub has no Everest token to start your server with: sign out and in "
                "again, or ask the admin to set EverestSpawner.everest_token.",
                reason="everest-token")
        self._token = token
        return token

    @staticmethod
    def _env_token() -> str:
        return os.environ.get("EVEREST_TOKEN", "")

    def _everest(self, token: str) -> JsonApi:
        return JsonApi(self.everest_url, token, timeout=self.http_request_timeout)

    def _relay(self, token: str) -> JsonApi:
        return JsonApi(self.relay_url, token, timeout=self.http_request_timeout)

    def _cache(self, token: str) -> JobCache:
        return cache_for(self.everest_url, token, self.http_request_timeout)

    # -- options ----------------------------------------------------------------------------

    def _profiles(self) -> list[prof.Profile]:
        return prof.parse_profiles(self.profiles)

    def _render_options_form(self, spawner: Spawner) -> str:
        return prof.options_form(self._profiles(), (self.user_options or {}).get("profile"))

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        return prof.options_from_form(formdata)

    def _chosen(self) -> prof.Profile | None:
        try:
            return prof.choose(self._profiles(), self.user_options or {})
        except prof.ProfileError as exc:
            raise spawn_failure(f"Cannot start this server: {exc}.", reason="options") from None

    # -- progress ---------------------------------------------------------------------------

    def _emit(self, progress: int, message: str, key: str | None = None) -> None:
        """Record a progress event (once per ``key`` when given)."""
        if key is not None and any(e.get("key") == key for e in self._events):
            return
        self._events.append({"progress": progress, "message": message, "key": key})
        if self.debug_progress:
            self.log.info("%s progress %d: %s", self._log_name, progress, message)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """The events of the current start, in order, from the first; every stream gets
        all of them (the hub opens a new one per page load)."""
        sent = 0
        while True:
            while sent < len(self._events):
                event = self._events[sent]
                sent += 1
                yield {"progress": event["progress"], "message": event["message"]}
            if not self._starting:
                return
            await asyncio.sleep(0.2)

    # -- start ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Start the server as an Everest job; returns its URL once it answers through the
        relay (see the module docstring). Raises a spawn failure the user can act on."""
        if self.internal_ssl:
            raise spawn_failure(
                "EverestSpawner cannot use JupyterHub's internal_ssl: servers run on other "
                "machines behind the relay's encrypted tunnel. Turn internal_ssl off.",
                reason="internal-ssl")
        profile = self._chosen()
        if not self.everest_url or not self.relay_url:
            raise spawn_failure("The hub is not configured for Everest (everest_url and "
                                "relay_url are required); tell the admin.", reason="config",
                                status=503)
        self._events = []
        self._starting = True
        self.job_id = self.session_id = None
        self._token = None  # a new sign-in may have brought a new token
        try:
            return await self._start(profile)
        except BaseException:
            await asyncio.shield(self._abandon())
            raise
        finally:
            self._starting = False

    async def _start(self, profile: prof.Profile | None) -> str:
        token = await self._everest_token()
        relay, everest = self._relay(token), self._everest(token)
        await self._cancel_leftovers(token)
        body = {"mode": "hub", "label": self.label, "base_url": self.server.base_url,
                "hub_env": self._hub_env(), "hub_forward": not self.hub_api_url,
                "default_url": "/lab"}
        if self.workspace_name:
            body["workspace"] = self.workspace_name
            await self._note_workspace(relay)
        session = await self._call(relay, "POST", "/api/sessions", body, what="the relay")
        self.session_id = session["id"]
        resources = [profile.resource] if profile and profile.resource else self.resources
        inputs = self._job_inputs(session, profile)
        job = await self._call(everest, "POST", f"/api/apps/{_app_path(self.app)}", {
            "name": self.job_name, "inputs": inputs,
            **({"resources": list(resources)} if resources else {})}, what="Everest")
        self.job_id = str(job["id"])
        self._cache(token).forget()
        self.log.info("%s: Everest job %s, relay session %s", self._log_name, self.job_id,
                      self.session_id)
        try:
            await relay.call("PATCH", f"/api/sessions/{self.session_id}",
                             {"job_id": self.job_id})
        except ApiError as exc:
            self.log.warning("relay: could not record job %s: %s", self.job_id, exc)
        return await self._wait_ready(relay, token, resources)

    async def _note_workspace(self, relay: JsonApi) -> None:
        """Tell the user (progress) what their server opens: a new workspace, the one their
        last server saved, or — said plainly — one whose last final save did not come."""
        name = self.workspace_name
        try:
            found = await relay.call("GET", f"/api/workspaces/{path_part(name)}")
        except ApiError as exc:
            if exc.status == 404:
                self._emit(5, f"Workspace {name}: new, kept from now on", key="workspace")
            return
        last = (found.get("snapshots") or [{}])[0]
        if last and last.get("saved") is False:
            self._emit(5, f"Workspace {name}: its last server ended without its final save; "
                          "restoring what was saved before", key="workspace")
            self.log.warning("%s: workspace %s: the last session's final save did not come",
                             self._log_name, name)
        else:
            self._emit(5, f"Workspace {name}: restoring {found.get('files', 0)} files",
                       key="workspace")

    @property
    def workspace_name(self) -> str | None:
        """The server's workspace: ``<user>`` or ``<user>/<server name>``; None when
        ``workspaces`` is off."""
        if not self.workspaces:
            return None
        return self.user.name + (f"/{self.name}" if self.name else "")

    def _hub_env(self) -> dict[str, str]:
        """The hub's environment for the server: JUPYTERHUB_* only (the relay takes nothing
        else); the API URLs point at ``hub_api_url`` when set."""
        env = {k: v for k, v in self.get_env().items()
               if k.startswith(_HUB_ENV_PREFIXES) and isinstance(v, str)}
        if self.hub_api_url:
            api = self.hub_api_url.rstrip("/")
            env["JUPYTERHUB_API_URL"] = api
            env["JUPYTERHUB_ACTIVITY_URL"] = f"{api}/users/{self.user.name}/activity"
        return env

    def launch_options(self, profile: prof.Profile | None) -> LaunchOptions:
        """The server's choices as the launch command has them: this spawner's settings are
        the defaults, the chosen profile's values replace them (its packages are added)."""
        time_limit = profile.time_limit if profile and profile.time_limit is not None else \
            self.time_limit
        return LaunchOptions(
            app=self.app, mode="hub", time_limit=time_limit, idle_timeout=self.idle_timeout,
            packages=list(self.packages) + list(profile.packages if profile else ()),
            name=self.job_name, resource=profile.resource if profile else None,
            workspace=self.workspace_name or "")

    def _job_inputs(self, session: dict[str, Any], profile: prof.Profile | None
                    ) -> dict[str, Any]:
        return self.launch_options(profile).inputs(
            self.relay_url_for_resources or session["relay_url"], session["ticket"],
            self.everest_url)

    async def _wait_ready(self, relay: JsonApi, token: str, resources: list[str]) -> str:
        """Follow the job (the shared status cache) and the relay session (long-polled)
        through :func:`launcher.session_start.step` until the server answers or the start
        fails."""
        cache = self._cache(token)
        submitted = time.monotonic()
        where = ", ".join(resources) if resources else ""
        state: SessionState | None = SessionState.WAITING
        queued_notes = 0
        while True:
            job: dict[str, Any] = {}
            try:
                snapshot = await cache.fresh(self.status_interval)
                job = snapshot.jobs.get(self.job_id, {})
                job_state = snapshot.state(self.job_id)
            except ApiError as exc:
                self.log.warning("%s: Everest: %s", self._log_name, exc)
                job_state = None
            try:
                session = await relay.call(
                    "GET", f"/api/sessions/{self.session_id}",
                    params={"state": str(state), "wait": f"{min(self.status_interval, 5.0):g}"},
                    timeout=self.http_request_timeout + 5.0)
            except ApiError as exc:
                if not exc.unreachable:
                    raise spawn_failure("The relay lost your server's session; try again.",
                                        status=502, log_message=f"relay: {exc}") from None
                self.log.warning("%s: relay: %s", self._log_name, exc)
                await asyncio.sleep(1.0)
                continue
            state = SessionState.known(session.get("state"))
            outcome = step(job_state, state, session.get("url"))
            if outcome.failure is Failure.RUNNER_STOPPED or \
                    outcome.failure is Failure.TICKET_EXPIRED:
                cache.forget()  # did the job end meanwhile? Its reason says more
                job = (await cache.fresh(0)).jobs.get(self.job_id, {})
                if JobState.parse(job.get("state")).is_terminal:
                    outcome = step(JobState.parse(job.get("state")), state)
            for milestone in outcome.reached:
                text = milestone.text(job_id=self.job_id, session_id=self.session_id,
                                      where=where)
                if milestone is Milestone.QUEUED:
                    minutes = int((time.monotonic() - submitted) // 60)
                    if minutes >= queued_notes:
                        self._emit(milestone.value, _capitalised(text) + (
                            f" for {minutes} min" if minutes else ""), f"queued-{minutes}")
                        queued_notes = minutes + 1
                else:
                    self._emit(milestone.value, _capitalised(text), milestone.name)
            if outcome.url:
                return outcome.url
            if outcome.failure is Failure.JOB_ENDED:
                raise await self._job_failure(token, job)
            if outcome.failure is not None:
                raise spawn_failure(f"Your server did not come up: {outcome.failure.message()}"
                                    ". Try again, or pick another profile.", status=502,
                                    log_message=f"relay session {self.session_id} {state}")

    async def _job_failure(self, token: str, job: dict[str, Any]) -> Exception:
        """A spawn failure saying how the job ended, with Everest's reason and the last
        error lines of the runner's log (never the whole log)."""
        state = JobState.parse(job.get("state"))
        info = str(job.get("info") or "").strip()
        message = f"Your server's Everest job {self.job_id} ended {state} before the " \
                  "server was reachable"
        message += f": {info[:300]}" if info else "."
        lines = await self._runner_log_tail(token, job)
        if lines:
            message += " The session runner said: " + " / ".join(lines)
        return spawn_failure(message, status=502,
                             log_message=f"job {self.job_id} {state}: {info}")

    async def _runner_log_tail(self, token: str, job: dict[str, Any]) -> list[str]:
        uri = (job.get("result") or {}).get("log")
        if not isinstance(uri, str) or not uri.startswith("/"):
            return []
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        try:
            resp = await AsyncHTTPClient().fetch(HTTPRequest(
                self.everest_url.rstrip("/") + uri, headers={"Authorization": f"Bearer {token}"},
                request_timeout=self.http_request_timeout))
        except Exception as exc:  # noqa: BLE001 - the log is a courtesy
            self.log.info("runner log of job %s not readable: %s", self.job_id, exc)
            return []
        text = resp.body.decode("utf-8", "replace").splitlines()
        errors = [line.split(" ", 3)[-1] for line in text if " ERROR " in line]
        return [line[:300] for line in (errors or text)[-3:]]

    async def _call(self, api: JsonApi, method: str, path: str, body: Any, *,
                    what: str) -> Any:
        try:
            return await api.call(method, path, body)
        except ApiError as exc:
            message, status = await self._explain(exc, what)
            raise spawn_failure(f"Could not start your server: {message}", status=status,
                                reason="unavailable" if status == 503 else "refused",
                                log_message=f"{what} {method} {path}: {exc.status} "
                                            f"{exc.message}") from None

    async def _explain(self, exc: ApiError, what: str) -> tuple[str, int]:
        """What a failed call to Everest or the relay tells the user, and its HTTP status:
        503 when the service (or Everest behind the relay) did not answer or cannot be used
        as configured, the service's own 4xx when it refused what was asked."""
        if what == "the relay":
            if exc.status == 503 and exc.explained:
                # the relay answered: it is Everest behind it that did not (its message
                # names it), e.g. "Everest at http://... is unreachable: ..."
                return f"Everest did not answer (the relay says: {exc.message}). " \
                       "Try again once Everest is back; tell the admin if this lasts.", 503
            if exc.unreachable:
                return f"the relay at {self.relay_url} did not answer ({exc.message}). " \
                       "Tell the admin if this lasts.", 503
            return f"the relay refused: {exc.message}.", _client_status(exc.status)
        if exc.unreachable or not exc.explained:
            detail = exc.message if exc.unreachable else \
                f"it answered {exc.status} without an Everest message"
            relay_everest = await self._relays_everest()
            if relay_everest and relay_everest.rstrip("/") != self.everest_url.rstrip("/"):
                return f"Everest at {self.everest_url} did not answer ({detail}), while the " \
                       f"relay reaches Everest at {relay_everest}: the hub's " \
                       "EverestSpawner.everest_url is likely wrong. Tell the admin.", 503
            return f"Everest at {self.everest_url} did not answer ({detail}): it is down, " \
                   "or EverestSpawner.everest_url is wrong. Tell the admin if this " \
                   "lasts.", 503
        return f"Everest refused: {exc.message}.", _client_status(exc.status)

    async def _relays_everest(self) -> str | None:
        """The Everest the relay checks tokens with (its ``GET /api/relay``), or None."""
        try:
            info = await JsonApi(self.relay_url, None, timeout=self.http_request_timeout,
                                 retries=0).call("GET", "/api/relay")
        except ApiError:
            return None
        url = info.get("everest_url") if isinstance(info, dict) else None
        return url if isinstance(url, str) and url else None

    async def _abandon(self) -> None:
        """After a failed or cancelled start: cancel the job, end the session."""
        try:
            await asyncio.wait_for(self._cancel(wait=0), self.http_request_timeout * 2)
        except Exception as exc:  # noqa: BLE001 - cleanup is best effort, never masks
            self.log.warning("%s: cleanup after a failed start: %s", self._log_name, exc)

    # -- leftovers and the sweep -------------------------------------------------------------

    async def _cancel_leftovers(self, token: str) -> int:
        """Cancel live jobs with this server's name that this spawner does not own (a
        start the hub lost track of); returns how many."""
        try:
            snapshot = await self._cache(token).fresh(self.status_interval)
        except ApiError as exc:
            self.log.warning("%s: cannot look for leftover jobs: %s", self._log_name, exc)
            return 0
        found = [jid for jid, job in snapshot.jobs.items()
                 if job.get("name") == self.job_name and jid != self.job_id
                 and not JobState.parse(job.get("state")).is_terminal]
        everest = self._everest(token)
        for jid in found:
            self.log.warning("%s: cancelling job %s, left from an earlier start",
                             self._log_name, jid)
            await cancel_job(everest, jid)
        await self._end_sessions_labelled(token)
        if found:
            self._cache(token).forget()
        return len(found)

    async def _end_sessions_labelled(self, token: str) -> None:
        relay = self._relay(token)
        try:
            sessions = await relay.call("GET", "/api/sessions")
        except ApiError as exc:
            self.log.warning("%s: relay: %s", self._log_name, exc)
            return
        for s in sessions or []:
            if s.get("label") == self.label and s.get("id") != self.session_id:
                await _end_session(relay, s["id"])

    def _ensure_sweeper(self) -> None:
        cls = EverestSpawner
        if self.sweep_interval > 0 and (cls._sweeper is None or cls._sweeper.done()):
            cls._sweeper = asyncio.ensure_future(
                sweep(self.sweep_interval, f"{JOB_PREFIX}{self.hub_id}/", _owners))

    # -- poll and stop ----------------------------------------------------------------------

    async def poll(self) -> int | None:
        """None while the server's job exists and has not ended; its exit status after.
        Never raises (see the module docstring)."""
        try:
            return await self._poll()
        except Exception as exc:  # noqa: BLE001 - poll must never raise
            self.log.warning("%s: poll: %s", self._log_name, exc)
            if time.monotonic() - self._last_known > self.poll_grace:
                return 1
            return None

    async def _poll(self) -> int | None:
        self._ensure_sweeper()
        if self._starting:
            return None
        token = await self._everest_token()
        if not self.job_id:
            # no job in the state: nothing runs — unless the hub died while a start was
            # pending (the state is saved only after start returns): cancel that job
            await self._cancel_leftovers(token)
            return 0
        cache = self._cache(token)
        try:
            snapshot = await cache.fresh(self.status_interval)
        except ApiError as exc:
            if exc.status == 401:
                self._token = None  # expired or revoked: read auth_state again next time
            if time.monotonic() - self._last_known > self.poll_grace:
                self.log.warning("%s: Everest unreachable for %.0f s; giving the server up",
                                 self._log_name, self.poll_grace)
                return 1
            return None
        state = snapshot.state(self.job_id)
        if state is None:
            # not listed: submitted after the listing, or deleted; ask once for this job
            try:
                job = await self._everest(token).call("GET", f"/api/jobs/{self.job_id}")
                state = JobState.parse(job.get("state"))
            except ApiError as exc:
                if exc.status == 404:
                    await self._end_session(token)
                    return 0
                return None
        if state.is_terminal:
            self.log.info("%s: job %s is %s", self._log_name, self.job_id, state)
            await self._end_session(token)
            return 0 if state == JobState.DONE else 1
        self._last_known = time.monotonic()
        return None

    async def stop(self, now: bool = False) -> None:
        """Cancel the job and end the relay session; safe to call any number of times."""
        await self._cancel(wait=0 if now else self.stop_wait)

    async def _cancel(self, wait: float) -> None:
        token = await self._everest_token()
        job_id = self.job_id
        if job_id:
            everest = self._everest(token)
            await cancel_job(everest, job_id)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    job = await everest.call("GET", f"/api/jobs/{job_id}")
                except ApiError:
                    break
                if JobState.parse(job.get("state")).is_terminal:
                    break
                await asyncio.sleep(0.5)
            self._cache(token).forget()
        await self._end_session(token)
        await self._log_workspace(token)

    async def _log_workspace(self, token: str) -> None:
        """Say in the hub's log how the server's workspace was saved at its end (a failed
        final save as a warning: the user's last changes may be missing)."""
        if not self.session_id or not self.workspace_name:
            return
        try:
            session = await self._relay(token).call("GET",
                                                    f"/api/sessions/{self.session_id}")
        except ApiError:
            return
        report = (session.get("workspace") or {}).get("report")
        if report and report.get("saved"):
            self.log.info("%s: workspace %s saved (%s files)", self._log_name,
                          self.workspace_name, report.get("files"))
        elif report:
            self.log.warning("%s: workspace %s was NOT saved at the end: %s; what was saved "
                             "before is kept", self._log_name, self.workspace_name,
                             report.get("error") or "unknown")

    async def _end_session(self, token: str) -> None:
        if self.session_id:
            await _end_session(self._relay(token), self.session_id)

    # -- state ------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.job_id:
            state.update(everest_spawner_version=STATE_VERSION, job_id=self.job_id,
                         session_id=self.session_id, everest_url=self.everest_url)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        version = state.get("everest_spawner_version")
        if version is None:
            return
        if version > STATE_VERSION:
            self.log.warning("%s: state version %s is newer than this spawner's (%s); "
                             "reading what it knows", self._log_name, version, STATE_VERSION)
        self.job_id = state.get("job_id") or None
        self.session_id = state.get("session_id") or None

    def clear_state(self) -> None:
        super().clear_state()
        self.job_id = self.session_id = None

    async def get_url(self) -> str:
        """The server's URL as the hub stores it (``Server.url``: the relay's address, as
        the relay gives it now, and this server's prefix), so a hub restart finds it
        unchanged."""
        if self.session_id:
            try:
                token = await self._everest_token()
                session = await self._relay(token).call(
                    "GET", f"/api/sessions/{self.session_id}")
                if session.get("url"):
                    base = self.server.base_url if self.server is not None else "/"
                    return session["url"].rstrip("/") + base
            except Exception as exc:  # noqa: BLE001 - fall back to the stored URL
                self.log.warning("%s: relay: %s", self._log_name, exc)
        return await super().get_url()

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        raise spawn_failure("EverestSpawner cannot use JupyterHub's internal_ssl: turn it "
                            "off (the relay's tunnel encrypts the way to the server).",
                            reason="internal-ssl")

    async def rename(self, new_name: str) -> None:
        """Named servers are found by name after a restart: no renaming while one runs."""
        if self.job_id:
            raise spawn_failure("Stop this server before renaming it.", reason="rename")


async def _end_session(relay: JsonApi, session_id: str) -> None:
    try:
        await relay.call("DELETE", f"/api/sessions/{path_part(session_id)}")
    except ApiError as exc:
        if exc.status != 404:
            log.warning("ending relay session %s: %s", session_id, exc)


def _client_status(status: int) -> int:
    """An upstream 4xx as the hub's answer; anything else a 503."""
    return status if 400 <= status < 500 else 503


def _app_path(app: str) -> str:
    return "/".join(path_part(part) for part in app.strip("/").split("/"))


def _owners() -> Owners:
    """The jobs this hub's spawners own, and the job names of starts in flight."""
    spawners = list(EverestSpawner._instances)
    return ({s.job_id for s in spawners if s.job_id},
            {s.job_name for s in spawners if s._starting})
