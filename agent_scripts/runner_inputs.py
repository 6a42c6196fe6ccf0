"""The session runner's settings: command-line options over the job's input files.

Everest writes each scalar input of the ``jupyter-session`` application into a file of the
task's working directory (the application's ``inputMappings``: ``relay.txt``, ``ticket.txt``,
...). Reading inputs from files keeps the ticket off every process list. A command-line option
given explicitly wins over the file, which is how tests and hand-started runs pass them.

Python >= 3.8, standard library only: this file is shipped inside the application.
"""

from __future__ import annotations

import argparse
import os
import re

import runner_packages

MODES = ("lab", "hub", "kernel")
"""Session modes: ``lab`` (JupyterLab with the runner's own token), ``hub`` (a JupyterHub's
single-user server: ``jupyterhub-singleuser`` with the environment the hub gave the relay) or
``kernel`` (one ipykernel for a JupyterLab elsewhere: ``runner_kernel``)."""

_BASE_URL = re.compile(r"^/(?:(?!\.+/)[A-Za-z0-9._~-]+/)+$")
"""A session path: ``/`` + segments, each ending in ``/`` (no empty, no ``.``-only)."""

DEFAULT_TIME_LIMIT = 8 * 3600
DEFAULT_IDLE_TIMEOUT = 3600

# input name -> (file name, kind); kind is str, int, bool or list
INPUT_FILES = {
    "relay": ("relay.txt", "str"),
    "ticket": ("ticket.txt", "str"),
    "mode": ("mode.txt", "str"),
    "time_limit": ("time_limit.txt", "int"),
    "idle_timeout": ("idle_timeout.txt", "int"),
    "packages": ("packages.txt", "list"),
    "repository": ("repository.txt", "str"),
    "default_url": ("default_url.txt", "str"),
    "base_url": ("base_url.txt", "str"),
    "everest_url": ("everest_url.txt", "str"),
    "bootstrap": ("bootstrap.txt", "bool"),
}


class InputError(ValueError):
    """An input is missing or malformed; the message names it."""


class Settings:
    """Everything the runner needs to know, validated.

    Attributes mirror the application's inputs plus where to work: ``relay`` (base URL of
    the relay's HTTP API), ``ticket``, ``mode``, ``time_limit`` and ``idle_timeout`` (seconds,
    0 = none), ``packages`` (pip requirement strings), ``repository`` (git URL or ''),
    ``default_url`` (JupyterLab path such as ``/lab``), ``base_url`` (the session's path at
    the relay when known before the redeem, else ''), ``everest_url``, ``bootstrap``,
    ``workdir`` (the task's directory), ``venv_cache`` (where bootstrapped environments live),
    ``tunnel`` (``auto``, ``openssh`` or ``asyncssh``: which SSH client carries the tunnel),
    ``route`` (``auto``, ``ssh`` or ``websocket``: how it reaches the relay).
    """

    def __init__(self, values: dict[str, object], workdir: str, venv_cache: str):
        self.relay = str(values.get("relay") or "").rstrip("/")
        self.ticket = str(values.get("ticket") or "")
        self.mode = str(values.get("mode") or "lab")
        self.time_limit = int(values.get("time_limit") or 0)
        self.idle_timeout = int(values.get("idle_timeout") or 0)
        self.packages: list[str] = list(values.get("packages") or [])
        self.repository = str(values.get("repository") or "")
        self.default_url = str(values.get("default_url") or "/lab")
        self.base_url = str(values.get("base_url") or "")
        self.everest_url = str(values.get("everest_url") or "")
        self.bootstrap = bool(values.get("bootstrap", True))
        self.workdir = workdir
        self.venv_cache = venv_cache
        self.tunnel = "auto"
        self.route = "auto"
        self._check()

    def _check(self) -> None:
        if not self.relay:
            raise InputError("input 'relay' is missing: the relay's address, e.g. http://host:8765")
        if not self.relay.startswith(("http://", "https://")):
            raise InputError(f"input 'relay' must start with http:// or https://, "
                             f"got {self.relay!r}")
        if not self.ticket:
            raise InputError("input 'ticket' is missing: ask the relay for one (everest-jupyter "
                             "launch does it for you)")
        if self.mode not in MODES:
            modes = "|".join(MODES)
            raise InputError(f"input 'mode' must be one of {modes}, got {self.mode!r}")
        for name in ("time_limit", "idle_timeout"):
            if getattr(self, name) < 0:
                raise InputError(f"input {name!r} must be >= 0 seconds")
        if not self.default_url.startswith("/") or "//" in self.default_url:
            raise InputError(f"input 'default_url' must be a path such as /lab, "
                             f"got {self.default_url!r}")
        if self.base_url and not _BASE_URL.match(self.base_url):
            raise InputError(f"input 'base_url' must be a path such as /session/<id>/, "
                             f"got {self.base_url!r}")
        for spec in self.packages:
            if spec.startswith("-"):
                raise InputError(f"input 'packages': {spec!r} is an option, not a package")
        if self.repository.startswith("-"):
            raise InputError(f"input 'repository' must be a git URL, got {self.repository!r}")


def _parse(kind: str, text: str, name: str) -> object:
    text = text.strip()
    if kind == "str":
        return text
    if kind == "int":
        if not text:
            return 0
        try:
            return int(float(text))
        except ValueError:
            raise InputError(f"input {name!r} must be a number, got {text!r}") from None
    if kind == "bool":
        low = text.lower()
        if low in ("", "1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise InputError(f"input {name!r} must be true or false, got {text!r}")
    # list: pip requirements separated by whitespace, commas or new lines
    return [part for part in text.replace(",", " ").split() if part]


def read_input_files(directory: str) -> dict[str, object]:
    """Read the inputs Everest wrote as files into ``directory``; absent files are skipped."""
    values: dict[str, object] = {}
    for name, (filename, kind) in INPUT_FILES.items():
        path = os.path.join(directory, filename)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                values[name] = _parse(kind, handle.read(), name)
    return values


def default_venv_cache() -> str:
    """Where bootstrapped environments are cached: env ``EVEREST_JUPYTER_CACHE`` or the
    user's cache folder (``%LOCALAPPDATA%`` on Windows, ``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get("EVEREST_JUPYTER_CACHE"):
        return os.environ["EVEREST_JUPYTER_CACHE"]
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "everest-jupyter", "venvs")


def build_parser() -> argparse.ArgumentParser:
    """The runner's command line; every option defaults to the job's input file."""
    parser = argparse.ArgumentParser(
        prog="session_runner.py",
        description="Run a JupyterLab session as an Everest task and tunnel it to the relay.")
    parser.add_argument("--relay", help="relay HTTP address (input relay)")
    parser.add_argument("--ticket", help="one-time ticket (input ticket)")
    parser.add_argument("--mode", help="lab, hub (a JupyterHub's single-user server) or "
                        "kernel (one kernel for a JupyterLab elsewhere)")
    parser.add_argument("--time-limit", type=int, help="seconds before the session stops")
    parser.add_argument("--idle-timeout", type=int, help="seconds of inactivity before stopping")
    parser.add_argument("--packages", help="extra pip packages, space or comma separated")
    parser.add_argument("--repository", help="git repository to clone into the notebook folder")
    parser.add_argument("--default-url", help="JupyterLab page to open, e.g. /lab")
    parser.add_argument("--base-url", help="the session's path at the relay, if known before "
                        "the redeem (JupyterLab then starts at once)")
    parser.add_argument("--everest-url", help="Everest address for the kernels' EVEREST_URL")
    parser.add_argument("--tunnel", choices=("auto", "openssh", "asyncssh"),
                        default=os.environ.get("EVEREST_JUPYTER_TUNNEL", "auto"),
                        help="SSH client for the tunnel: OpenSSH's ssh when usable (auto), "
                             "or force one (env EVEREST_JUPYTER_TUNNEL)")
    parser.add_argument("--route", choices=("auto", "ssh", "websocket"),
                        default=os.environ.get("EVEREST_JUPYTER_ROUTE", "auto"),
                        help="how the tunnel reaches the relay: its SSH port when that answers, "
                             "else a WebSocket on its HTTP(S) port (auto), or force one "
                             "(env EVEREST_JUPYTER_ROUTE)")
    parser.add_argument("--no-bootstrap", action="store_true",
                        help="never create a virtual environment; fail if JupyterLab is missing")
    parser.add_argument("--inputs-dir", default=".", help="where the input files are (default .)")
    parser.add_argument("--workdir", default=".", help="the task's working directory")
    parser.add_argument("--venv-cache", default=None, help="bootstrapped environments cache")
    return parser


def load_settings(argv: list[str] | None = None) -> Settings:
    """Parse ``argv`` and the input files into validated :class:`Settings`.

    Raises :class:`InputError` naming the first bad input.
    """
    args = build_parser().parse_args(argv)
    values = read_input_files(args.inputs_dir)
    explicit = {
        "relay": args.relay, "ticket": args.ticket, "mode": args.mode,
        "time_limit": args.time_limit, "idle_timeout": args.idle_timeout,
        "repository": args.repository, "default_url": args.default_url,
        "base_url": args.base_url, "everest_url": args.everest_url,
    }
    for name, value in explicit.items():
        if value is not None:
            values[name] = value
    if args.packages is not None:
        values["packages"] = _parse("list", args.packages, "packages")
    if args.no_bootstrap or os.environ.get("EVEREST_JUPYTER_BOOTSTRAP", "") in ("0", "false"):
        values["bootstrap"] = False
    values.setdefault("time_limit", DEFAULT_TIME_LIMIT)
    values.setdefault("idle_timeout", DEFAULT_IDLE_TIMEOUT)
    workdir = os.path.abspath(args.workdir)
    settings = Settings(values, workdir, args.venv_cache or default_venv_cache())
    try:  # local packages the job brought (launch --packages ./my.whl, -r FILE)
        settings.packages = runner_packages.resolve(
            settings.packages, os.path.abspath(args.inputs_dir),
            os.path.join(os.path.dirname(settings.venv_cache), "packages"))
    except runner_packages.PackageFilesError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"the job's package files could not be kept: {exc}") from None
    if args.tunnel not in ("auto", "openssh", "asyncssh"):
        raise InputError(f"tunnel must be auto, openssh or asyncssh, got {args.tunnel!r}")
    settings.tunnel = args.tunnel
    if args.route not in ("auto", "ssh", "websocket"):
        raise InputError(f"route must be auto, ssh or websocket, got {args.route!r}")
    settings.route = args.route
    return settings


def forget_ticket_file(directory: str) -> None:
    """Remove ``ticket.txt`` once read: the ticket is single use, no need to leave it about."""
    try:
        os.remove(os.path.join(directory, INPUT_FILES["ticket"][0]))
    except OSError:
        pass
