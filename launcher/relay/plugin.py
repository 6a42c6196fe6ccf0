"""The relay as a plugin of the local server, and the ``jupyter-session`` web-form integration.

Loaded with ``--plugin launcher.relay.plugin`` (the ``everest-jupyter server`` command and the
embedded default pass it; the server package itself knows nothing of the relay, which lives
on the user side). See :mod:`everest_local.hooks`: ``setup(server)`` starts a
:class:`launcher.relay.service.Relay` inside the server's process and event loop — its API and SSH
server on loopback ports of their own, its state in ``<data dir>/relay/``, its address in
``<data dir>/relay.json`` (``{"pid","url","ssh_port"}``) — checking tokens against this very
server, and naming its page's sign-ins' browser addresses to it under the server's
client-address key (``<data dir>/client-address.key``, :mod:`everest_app.client_address`);
its page's sign-ins wait as the server's do (``--login-attempts``, ``--login-backoff-max``).
So the embedded default is one background process, and ``server stop`` stops both.

Three hooks for the ``jupyter-session`` application (and a navigation link to the relay's
page, which lists the user's workspaces):

- **input preparer**: a submission without a ``ticket`` (the web form) gets a session minted
  for the submitting user, opening the ``workspace`` the form names (``default``; empty:
  none; 409 naming the live session that writes it), and its ticket and the relay's address
  filled in — nobody pastes a ticket. A submission with its own ticket
  (``everest-jupyter launch``) passes unchanged.
- **app decorator**: the form's *Workspace* field offers the user's workspaces (its
  description's ``examples``).
- **job decorator**: a job's JSON gains ``"session": {"id", "state", "url", "workspace"}``
  (``workspace``: its name and how the runner's final save went) — ``url``
  (with the notebook's token) once the relay has probed the notebook through the tunnel —
  which the job page shows as a link. It reads the relay's state in memory/SQLite, no
  network I/O. When the job has ended, a session still marked live is ended with it.

Set ``EVEREST_JUPYTER_EMBEDDED_RELAY=0`` in the server's environment to leave the relay out.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from everest_app import client_address
from everest_app.errors import BadRequestError, ServerError
from everest_app.states import JobState
from launcher.relay.client import RELAY_JSON
from launcher.relay.options import check_default_url
from launcher.relay.state import SessionState
from launcher.relay.store import is_ticket
from launcher.relay.workspaces import WorkspaceError

log = logging.getLogger(__name__)

APP_ALIAS = "jupyter-session"
RELAY_DIR = "relay"


class SessionRelayPlugin:
    """The relay inside one local server, and the hooks that use it."""

    def __init__(self, server: Any):
        from launcher.relay.service import Relay, RelayConfig

        self.relay = Relay(RelayConfig(
            state_dir=server.data_dir / RELAY_DIR, everest_url=server.url,
            info_file=server.data_dir / RELAY_JSON,
            # page sign-ins name the browser's address to the server, signed, and wait as
            # the server's own would
            client_address_key_file=server.data_dir / client_address.KEY_FILE,
            login_attempts=server.settings.login_attempts,
            login_backoff_max=server.settings.login_backoff_max,
            http="127.0.0.1:0", ssh="127.0.0.1:0"))  # port 0: the last one, else any
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        await self.relay.start()

    async def ready(self) -> None:
        """Wait until the relay serves; raises ``ServerError`` if it could not start."""
        try:
            await asyncio.shield(self._started)
        except Exception as exc:  # noqa: BLE001 - any start failure is reported the same way
            raise ServerError(f"the session relay did not start: {exc}", status=502) from exc

    async def prepare(self, user: str, app: Any, inputs: Any) -> Any:
        """Fill in ``ticket`` and ``relay`` for a submission that has no ticket; refuse a
        ticket this relay minted for another user's session."""
        if not isinstance(inputs, dict):
            return inputs
        if inputs.get("ticket"):
            await self.ready()
            ticket = inputs["ticket"]
            if not is_ticket(ticket):
                # compared exactly as minted: the runner would trim " <ticket>\n" and redeem
                # another user's ticket that this check did not recognise
                raise BadRequestError("input 'ticket': not a relay ticket (40 hex digits, "
                                      "nothing around them)", status=400)
            record = self.relay.store.by_ticket(ticket)
            if record is not None and record.owner != user:
                log.warning("%s submitted a ticket of another user's session %s", user,
                            record.id)
                raise BadRequestError("input 'ticket': not a ticket of yours; ask the relay "
                                      "for a session of your own", status=400)
            return inputs
        mode = inputs.get("mode") or "lab"
        if mode != "lab":
            raise BadRequestError(f"input 'mode': {mode!r} needs a ticket (JupyterHub's "
                                  "EverestSpawner gives one); this form starts 'lab' sessions",
                                  status=400)
        try:
            default_url = check_default_url(inputs.get("default_url") or "/lab")
        except ValueError as exc:
            raise BadRequestError(f"input {exc}", status=400) from None
        await self.ready()
        workspace = inputs.get("workspace", "default")
        if not isinstance(workspace, str):
            raise BadRequestError("input 'workspace': a workspace name (empty: none)",
                                  status=400)
        try:
            record, ticket = await self.relay.create_session(
                user, mode=mode, label="web form", default_url=default_url,
                workspace=workspace or None)
        except WorkspaceError as exc:
            raise BadRequestError(f"input 'workspace': {exc.message}",
                                  status=exc.status) from None
        log.info("session %s minted for %s's web-form submission", record.id, user)
        return {**inputs, "ticket": ticket, "relay": inputs.get("relay") or self.relay.url,
                "base_url": record.base_url}  # JupyterLab boots while the ticket is redeemed

    def describe(self, user: str, description: dict[str, Any]) -> dict[str, Any] | None:
        """The form's description for ``user``: the Workspace field offers their workspaces
        (``examples``), ``default`` first."""
        store = self.relay.workspaces
        spec = (description.get("inputs") or {}).get("workspace")
        if store is None or not isinstance(spec, dict):
            return None
        try:
            names = [w.name for w in store.list(user)]
        except OSError as exc:
            log.warning("could not list %s's workspaces: %s", user, exc)
            return None
        inputs = dict(description["inputs"])
        inputs["workspace"] = {**spec, "examples": list(dict.fromkeys(["default", *names]))}
        return {**description, "inputs": inputs}

    def decorate(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """``{"session": {...}}`` for a job whose ticket this relay minted, else None."""
        ticket = (job.get("inputs") or {}).get("ticket")
        store = self.relay.store
        if not isinstance(ticket, str) or not ticket or store is None:
            return None
        record = store.by_ticket(ticket)
        if record is None:
            return None
        if record.job_id is None:
            store.update(record.id, job_id=job["id"])
        if JobState.parse(job.get("state")).is_terminal and record.live:
            self.relay.end_session(record.id)
            record = store.get(record.id)
        ready = record.state is SessionState.READY
        workspace = None
        if record.workspace:  # the job page says whether it was saved at the end
            workspace = {"name": record.workspace.get("name"),
                         "read_only": bool(record.workspace.get("read_only")),
                         "report": record.workspace_report}
        return {"session": {"id": record.id, "state": record.state.value,
                            "url": self.relay.session_url(record) if ready else None,
                            "workspace": workspace}}


def setup(server: Any) -> None:
    """Plugin entry point: start the relay and register the ``jupyter-session`` hooks."""
    if os.environ.get("EVEREST_JUPYTER_EMBEDDED_RELAY", "1").lower() in ("0", "false", "no"):
        log.info("embedded session relay switched off")
        return
    plugin = SessionRelayPlugin(server)
    server.hooks.add_stop_callback(plugin.relay.stop)
    server.hooks.add_input_preparer(APP_ALIAS, plugin.prepare)
    server.hooks.add_job_decorator(APP_ALIAS, plugin.decorate)
    server.hooks.add_app_decorator(APP_ALIAS, plugin.describe)
    # the relay's page lists the user's sessions and workspaces (with zip downloads)
    server.hooks.add_nav_link("Workspaces", lambda: plugin.relay.url + "/"
                              if plugin.relay.http_port else None)
    server.session_relay = plugin
