"""Extension seams of the local server: input preparers, job decorators, plugin modules.

A *plugin* is a module with ``setup(server) -> None``; ``server`` is the running
:class:`everest_local.app.LocalServer` (``server.hooks``, ``server.settings``,
``server.url``, ``server.data_dir``). The server imports the plugins given with
``--plugin MODULE`` and nothing else: this package knows no plugin by name (the session relay,
``launcher.relay.plugin``, is named by the commands that want it).

Three hooks, each keyed by application alias (``"jupyter-session"``):

- **Input preparer** ``prepare(user: str, app: Application, inputs: dict) -> dict``
  (or a coroutine function returning the dict): called on every submission of that
  application *before* input validation, with the caller's raw inputs; returns the inputs
  to validate and store. It may add values the user did not give (the session plugin asks
  the relay for a one-time ticket). Raising ``everest_app.errors.BadRequestError`` answers
  400 with its message; any other ``EverestError`` answers 502.
- **Job decorator** ``decorate(job: dict) -> dict | None``: called each time a job of that
  application is rendered as JSON; the returned keys are merged into the job object (for
  example ``{"session": {"url": ..., "state": ...}}``, which the web UI shows as a link).
  It runs on the server's event loop for every GET: keep it fast and free of I/O.

- **App decorator** ``describe(user: str, description: dict) -> dict | None``: called when
  ``user`` asks for that application's description (``GET /api/apps/<app>``, which the
  form is built from); a returned dict replaces it for that answer (for example an input's
  ``examples``, which the form offers as choices). Fast and free of blocking I/O.

And one for the web UI: ``add_nav_link(label, url)`` — a link in every page's navigation
(the session plugin links the relay's page, which lists the user's workspaces); ``url`` is a
string or a function returning one (None: not shown), asked at each page view.

And one life-cycle hook: ``add_stop_callback(fn)`` — ``fn()`` (or a coroutine function) runs
when the server stops cleanly, after running tasks have been interrupted and before the
database closes, so a plugin can shut down what its ``setup`` started.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

InputPreparer = Callable[..., Any]
JobDecorator = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class Hooks:
    """The registry plugins fill in; the server consults it per application alias."""

    def __init__(self) -> None:
        self.input_preparers: dict[str, InputPreparer] = {}
        self.job_decorators: dict[str, JobDecorator] = {}
        self.stop_callbacks: list[Callable[[], Any]] = []
        self.nav_links: list[tuple[str, Callable[[], str | None]]] = []
        self.app_decorators: dict[str, Callable[[str, dict[str, Any]], Any]] = {}

    def add_input_preparer(self, alias: str, prepare: InputPreparer) -> None:
        """Register ``prepare`` for submissions of application ``alias`` (one per alias)."""
        self.input_preparers[alias] = prepare

    def add_job_decorator(self, alias: str, decorate: JobDecorator) -> None:
        """Register ``decorate`` for the JSON of jobs of application ``alias``."""
        self.job_decorators[alias] = decorate

    def add_app_decorator(self, alias: str,
                          describe: Callable[[str, dict[str, Any]], Any]) -> None:
        """Register ``describe`` for the description of application ``alias``."""
        self.app_decorators[alias] = describe

    def add_nav_link(self, label: str, url: str | Callable[[], str | None]) -> None:
        """Show ``label`` linking to ``url`` in the web UI's navigation."""
        self.nav_links.append((label, url if callable(url) else (lambda: url)))

    def add_stop_callback(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` (awaited if it returns an awaitable) when the server stops."""
        self.stop_callbacks.append(fn)


def load_plugins(server: Any, names: Iterable[str] = ()) -> list[str]:
    """Import each plugin module in ``names`` (once each) and call its ``setup(server)``.

    Returns the names loaded. A missing module raises ``ModuleNotFoundError``; so does any
    import error inside one; a module without ``setup`` raises ``AttributeError``.
    """
    loaded = list(dict.fromkeys(names))
    for name in loaded:
        module = importlib.import_module(name)
        setup = getattr(module, "setup", None)
        if setup is None:
            raise AttributeError(f"plugin {name} has no setup(server) function")
        setup(server)
        log.info("plugin %s loaded", name)
    return loaded

