"""The Littlest JupyterHub plugin of everest-jupyter: users' servers as Everest jobs.

TLJH loads it through the ``tljh`` entry point and calls its hooks:

- ``tljh_extra_hub_pip_packages``: everest-jupyter in the hub's environment (the spawner and
  authenticator, entry points ``everest``);
- ``tljh_extra_user_pip_packages``: everest-jupyter in the users' environment too (the
  ``everest-jupyter`` command and the orchestrator in terminals and kernels on the hub host);
- ``tljh_config_post_install``: the ``everest:`` section's defaults into ``config.yaml``;
- ``tljh_custom_jupyterhub_config``: the hub's spawner and authenticator set from the
  ``everest:`` section of TLJH's ``config.yaml`` (``sudo tljh-config set everest.url ...``),
  checked so a typo fails the hub's start with a message naming it.

The section (see README.md)::

    everest:
      url: https://everest.example.org       # the Everest that runs the servers' jobs
      relay: https://relay.example.org       # the relay's API as the hub reaches it
      app: jupyter-session                   # the application's id or owner/alias
      profiles:                              # what users choose from (EverestSpawner.profiles)
        - {display_name: "Small VM, 2 h", resource: vm-small, time_limit: 7200}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pluggy
import yaml

hookimpl = pluggy.HookimplMarker("tljh")

SECTION = "everest"
PACKAGE = "everest-jupyter"
# key -> (EverestSpawner/EverestAuthenticator setting it fills, type, help for messages)
SETTINGS: dict[str, tuple[str, type | tuple[type, ...], str]] = {
    "url": ("EverestSpawner.everest_url", str, "the Everest that runs the jobs"),
    "relay": ("EverestSpawner.relay_url", str, "the relay's API as the hub reaches it"),
    "relay_for_resources": ("EverestSpawner.relay_url_for_resources", str,
                            "the relay as resources reach it, if different"),
    "app": ("EverestSpawner.app", str, "the jupyter-session application's id or alias"),
    "token": ("EverestSpawner.everest_token", str,
              "a service token for all jobs (else each user's own, with authenticator: true)"),
    "resources": ("EverestSpawner.resources", list, "resource ids jobs may run on"),
    "profiles": ("EverestSpawner.profiles", list, "presets users choose from"),
    "time_limit": ("EverestSpawner.time_limit", int, "seconds a server may run"),
    "packages": ("EverestSpawner.packages", list, "extra pip requirements on the resource"),
    "hub_id": ("EverestSpawner.hub_id", str, "names this hub's jobs"),
    "hub_api_url": ("EverestSpawner.hub_api_url", str,
                    "the hub API as resources reach it directly (default: via the relay)"),
    "start_timeout": ("EverestSpawner.start_timeout", int, "seconds a spawn may take"),
    "authenticator": ("", bool, "sign users in with their Everest accounts (default true)"),
    "package": ("", str, "the pip requirement TLJH installs (default everest-jupyter)"),
}
DEFAULTS = {"app": "jupyter-session", "authenticator": True, "package": PACKAGE}


class EverestConfigError(ValueError):
    """The ``everest:`` section is missing something or has a wrong value."""


def config_file() -> Path:
    """TLJH's ``config.yaml`` (under ``$TLJH_INSTALL_PREFIX``, default ``/opt/tljh``, as
    TLJH itself finds it)."""
    return Path(os.environ.get("TLJH_INSTALL_PREFIX", "/opt/tljh")) / "config" / "config.yaml"


def read_section(path: Path | None = None) -> dict[str, Any]:
    """The checked ``everest:`` section, defaults filled in. Raises EverestConfigError."""
    path = path or config_file()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        data = {}
    section = data.get(SECTION) or {}
    if not isinstance(section, dict):
        raise EverestConfigError(f"{path}: '{SECTION}' must be a mapping")
    unknown = sorted(set(section) - set(SETTINGS))
    if unknown:
        raise EverestConfigError(f"{path}: unknown {SECTION}.{unknown[0]}; known: "
                                 f"{', '.join(sorted(SETTINGS))}")
    for key, value in section.items():
        kind = SETTINGS[key][1]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise EverestConfigError(f"{path}: {SECTION}.{key} ({SETTINGS[key][2]}) must be "
                                     f"a {getattr(kind, '__name__', kind)}, got {value!r}")
    return {**DEFAULTS, **section}


def _package() -> str:
    try:
        return read_section()["package"]
    except EverestConfigError:
        return PACKAGE  # the hub's start reports the section's problem


@hookimpl
def tljh_extra_hub_pip_packages() -> list[str]:
    return [_package()]


@hookimpl
def tljh_extra_user_pip_packages() -> list[str]:
    return [_package()]


@hookimpl
def tljh_config_post_install(config: dict[str, Any]) -> None:
    section = config.setdefault(SECTION, {})
    for key, value in DEFAULTS.items():
        section.setdefault(key, value)


@hookimpl
def tljh_custom_jupyterhub_config(c: Any) -> None:
    section = read_section()
    for key in ("url", "relay"):
        if not section.get(key):
            raise EverestConfigError(
                f"{config_file()}: {SECTION}.{key} is not set ({SETTINGS[key][2]}); "
                f"sudo tljh-config set {SECTION}.{key} VALUE && sudo tljh-config reload")
    c.JupyterHub.spawner_class = "everest"
    c.JupyterHub.cleanup_servers = False  # servers are jobs: they outlive hub restarts
    for key, value in section.items():
        target = SETTINGS[key][0]
        if target:
            cls, _, name = target.partition(".")
            setattr(c[cls], name, value)
    if section["authenticator"]:
        c.JupyterHub.authenticator_class = "everest"
        c.EverestAuthenticator.everest_url = section["url"]  # its tokens: in auth_state
