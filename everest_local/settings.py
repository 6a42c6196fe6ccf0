"""The local server's settings, declared once: the command line, config files, the factory,
tests and ``docs/reference/server.md`` all read these declarations (see
:mod:`everest_app.options`)."""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Bool, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from everest_app.options import PathTrait


def default_slots() -> int:
    """Batch slots when none are given: one per CPU the process may use, at least 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 2
    return max(2, cpus)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/everest-jupyter/server``: where the embedded server keeps its data."""
    from everest_app.config import data_dir

    return data_dir() / "server"


class ServerSettings(Configurable):
    """Everything a :class:`everest_local.app.LocalServer` needs to run.

    Build it with keyword arguments (``ServerSettings(data_dir=..., port=0)``) or from a
    command line (:func:`everest_app.options.from_options`); a value out of range raises
    ``traitlets.TraitError``.
    """

    data_dir = PathTrait(
        help="The server's data folder: its database, uploaded and output files, task "
             "folders.",
    ).tag(config=True, default_text="$XDG_DATA_HOME/everest-jupyter/server")
    host = Unicode("127.0.0.1", help="The address to listen on.").tag(config=True)
    port = Integer(8800, help="The port to listen on (0: any free port).").tag(config=True)
    apps = List(PathTrait(), help="More applications to offer: folders, application.json "
                                  "files or Everest export zips.").tag(config=True)
    slots = Integer(
        help="Batch tasks run at once; the rest wait READY in submission order.",
    ).tag(config=True, default_text="one per CPU this process may use, at least 2")
    service_slots = Integer(
        32, help="Long-lived service tasks (applications with the keyword 'service', such as "
                 "notebook sessions) run at once, in a pool of their own so they never starve "
                 "short tasks.").tag(config=True)
    kill_grace = Float(
        5.0, help="Seconds between SIGINT, SIGTERM and SIGKILL when a task is cancelled or "
                  "reaches its time limit.").tag(config=True)
    max_attempts = Integer(
        3, help="Tries of a task of an application with retryFailedTasks.").tag(config=True)
    resources = PathTrait(
        None, allow_none=True,
        help="A YAML file of the resources tasks may run on (local, docker, ssh, slurm; see "
             "docs/resources.md); without it every task runs on this machine.",
    ).tag(config=True, metavar="FILE")
    public_url = Unicode(
        None, allow_none=True,
        help="The URL tasks get as EVEREST_URL to reach this server (default: the listening "
             "address).").tag(config=True, metavar="URL")
    keep_work = Bool(False, help="Keep task work folders (for debugging).").tag(config=True)
    login_attempts = Integer(
        5, help="Failed sign-ins for one user from one address before each further try must "
                "wait (1 s, doubling; 4x this from one address for any users, and per user "
                "once the failures come from --login-lock-addresses addresses).",
    ).tag(config=True)
    login_backoff_max = Float(
        900.0, help="The longest wait between sign-in tries after failures, in seconds.",
    ).tag(config=True)
    task_user = Unicode(
        "",
        help="When the server runs as root: the one unprivileged OS account every user's "
             "tasks run as. Empty (the default): each user's tasks run as an account of "
             "their own, everest-task-<hash of the user name>, created when first needed, "
             "so that no user's task reads another's. Never root; tasks of a server run by "
             "another account run as that account.",
    ).tag(config=True, metavar="ACCOUNT")
    task_containment = Unicode(
        "auto",
        help="How local tasks are contained so that nothing a task started outlives it: "
             "cgroup (a cgroup v2 of the server's per task, killed as a whole), subreaper "
             "(a reaper process per task that kills its orphaned descendants), or auto "
             "(cgroup where this machine lets the server create cgroups, else subreaper).",
    ).tag(config=True, metavar="KIND")
    task_user_for = List(
        Unicode(),
        help="USER=ACCOUNT: run Everest user USER's tasks as OS account ACCOUNT, which "
             "isolates users' running tasks from each other too (root only).",
    ).tag(config=True, metavar="USER=ACCOUNT", append=True)
    allow_shared_task_user = Bool(
        False, help="Start even though the server does not run as root and has several "
                    "users: all their tasks then run as the server's account and can read "
                    "its data.").tag(config=True)
    plain_api = Bool(
        False, help="Offer only Everest's own API, none of this server's extensions (batch "
                    "submission, waiting for jobs to end; see docs/api-extensions.md): for "
                    "trying a client's fallback path as a real Everest would answer it.",
    ).tag(config=True)
    max_wait = Float(
        30.0, help="The longest a waiting job listing (GET /api/jobs?ended_after=...&wait=) "
                   "holds its request open, in seconds; longer waits asked for are cut to "
                   "this.").tag(config=True, metavar="SECONDS")
    max_jobs_in_flight = Integer(
        10000, help="Jobs one user may have queued or running; more are refused with 429 and "
                    "Retry-After (0: no limit).").tag(config=True, metavar="N")
    max_running_per_user = Integer(
        0, help="Batch tasks one user may have running at once, over all resources; their "
                "further jobs wait (in their place) while other users' jobs start (0: no cap; "
                "free slots are shared among users with waiting work either way).",
    ).tag(config=True, metavar="N")
    max_stored_bytes = Integer(
        0, help="Bytes of files (uploads and job outputs) one user may keep; more are refused "
                "with 429 and Retry-After (0: no limit).").tag(config=True, metavar="BYTES")
    disk_reserve = Integer(
        4 << 20, help="Bytes of disk held aside so that deletes still work when the disk is "
                      "full (see everest_local/disk.py).").tag(config=True, metavar="BYTES")
    max_body_size = Integer(
        64 << 20, help="The largest JSON request body, in bytes (buffered in memory).",
    ).tag(config=True, metavar="BYTES")
    max_upload_size = Integer(
        64 << 30, help="The largest file upload, in bytes (streamed to disk).",
    ).tag(config=True, metavar="BYTES")
    plugins = List(
        Unicode(), help="Modules to import whose setup(server) hook extends the server.",
    ).tag(config=True, option="--plugin", dest="plugin", metavar="MODULE", append=True)
    login_lock_addresses = Integer(
        10, help="Different addresses whose failed sign-ins for one user lock that user's "
                 "account (each try waits, as above); a browser or client holding the user's "
                 "known-device cookie from an earlier sign-in is never locked out by them.",
    ).tag(config=True, metavar="N")

    @property
    def task_users(self) -> dict[str, str]:
        """``task_user_for`` as a mapping of Everest user to OS account."""
        return dict(pair.split("=", 1) for pair in self.task_user_for)

    @validate("task_user_for")
    def _pairs(self, proposal: dict) -> list[str]:
        for pair in proposal["value"]:
            user, sep, account = pair.partition("=")
            if not (sep and user and account):
                raise TraitError(f"task_user_for wants USER=ACCOUNT, got {pair!r}")
        return proposal["value"]

    @default("data_dir")
    def _default_data_dir(self) -> Path:
        return default_data_dir()

    @default("slots")
    def _default_slots(self) -> int:
        return default_slots()

    @validate("slots", "service_slots", "max_attempts", "login_attempts",
              "login_lock_addresses")
    def _at_least_one(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name.replace('_', ' ')} must be at least 1")
        return proposal["value"]

    @validate("kill_grace", "max_running_per_user")
    def _not_negative(self, proposal: dict) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name.replace('_', ' ')} must be >= 0")
        return proposal["value"]

    @validate("task_containment")
    def _containment(self, proposal: dict) -> str:
        if proposal["value"] not in ("auto", "cgroup", "subreaper"):
            raise TraitError(f"task containment is auto, cgroup or subreaper, not "
                             f"{proposal['value']!r}")
        return proposal["value"]

    @validate("login_backoff_max")
    def _backoff(self, proposal: dict) -> float:
        if proposal["value"] < 1:
            raise TraitError("the login backoff must be at least 1 s")
        return proposal["value"]
