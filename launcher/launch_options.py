"""What a user chooses for a session, declared once: the ``launch`` command's options, the
profile's ``launch:`` defaults and ``docs/reference/launch.md`` come from these traits (see
:mod:`everest_app.options`). Light to import: the CLI builds its parser from it."""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Float, Integer, List, Unicode
from traitlets.config import Config, Configurable

APP = "jupyter-session"


class LaunchOptions(Configurable):
    """A session's options. ``None`` leaves an input to the application's default.

    A profile may set any of them under ``launch:`` (``time_limit: 3600``); the command
    line wins over the profile.
    """

    resource = Unicode(
        None, allow_none=True,
        help="The resource to run on (an id; the local server takes names too).",
    ).tag(config=True, metavar="NAME|ID")
    image = Unicode(
        None, allow_none=True,
        help="The container image, on a docker resource that allows it.").tag(config=True)
    time_limit = Integer(
        None, allow_none=True, help="Stop the session after this many seconds.",
    ).tag(config=True, metavar="SECONDS", default_text="the application's")
    idle_timeout = Integer(
        None, allow_none=True,
        help="Stop the session after this many seconds without activity (0: never).",
    ).tag(config=True, metavar="SECONDS", default_text="the application's")
    packages = List(
        Unicode(), help="Extra pip packages for the session; a local wheel, sdist or project "
                        "folder is sent with the job.").tag(config=True, metavar="PKG")
    requirements = Unicode(
        None, allow_none=True,
        help="A pip requirements file to install in the session; it and the local files it "
             "names are sent with the job.",
    ).tag(config=True, metavar="FILE", aliases=("-r",))
    repository = Unicode(
        None, allow_none=True, help="A git repository to clone into the notebook folder.",
    ).tag(config=True, metavar="GIT_URL")
    workspace = Unicode(
        "default",
        help="Your workspace the session opens as its JupyterLab root: restored before it "
             "starts, saved while it runs and at its end ('' for none: nothing is kept).",
    ).tag(config=True, metavar="NAME")
    snapshot = Unicode(
        None, allow_none=True,
        help="Restore this snapshot of the workspace's history (listed by "
             "'everest-jupyter workspaces NAME').").tag(config=True, metavar="ID")
    read_only = Bool(
        False, help="Open a copy of the workspace that nothing saves back (allowed while "
                    "another session writes it).").tag(config=True)
    default_url = Unicode("/lab", help="The JupyterLab page to open.").tag(
        config=True, metavar="PATH")
    name = Unicode(None, allow_none=True, help="The job's name.").tag(
        config=True, default_text="jupyter-session")
    app = Unicode(
        APP, help="The jupyter-session application's id or owner/alias.").tag(config=True)
    timeout = Float(
        None, allow_none=True,
        help="Give up (and cancel the job) if the session is not ready after this many "
             "seconds.").tag(config=True, default_text="wait")
    mode = Unicode("lab", help="The session's kind (hub-mode sessions are the spawner's).",
                   ).tag(config=True, cli=False)

    def inputs(self, relay_url: str, ticket: str, everest_url: str,
               base_url: str | None = None) -> dict[str, Any]:
        """The job's inputs (only those given, so the app's defaults apply to the rest).
        ``base_url``: the relay session's path, which lets the runner start JupyterLab
        before it has redeemed the ticket (lab mode only)."""
        inputs: dict[str, Any] = {"relay": relay_url, "ticket": ticket, "mode": self.mode,
                                  "default_url": self.default_url, "everest_url": everest_url}
        if base_url and self.mode == "lab":
            inputs["base_url"] = base_url
        if self.time_limit is not None:
            inputs["time_limit"] = self.time_limit
        if self.idle_timeout is not None:
            inputs["idle_timeout"] = self.idle_timeout
        if self.packages:
            inputs["packages"] = " ".join(self.packages)
        if self.repository:
            inputs["repository"] = self.repository
        if self.image:
            inputs["image"] = self.image
        # for the record (the job page shows it): the relay session, not the job, opens it
        inputs["workspace"] = self.workspace or ""
        return inputs


def profile_config(defaults: dict[str, Any]) -> Config:
    """A profile's ``launch:`` section as configuration (``packages`` may be one string)."""
    values = dict(defaults or {})
    if isinstance(values.get("packages"), str):
        values["packages"] = values["packages"].split()
    return Config({"LaunchOptions": values})
