"""Computing resources of the local server: where a job's task runs.

Resources are declared in a YAML file (``everest-jupyter server --resources FILE``; the
format, with an example per kind, is in ``docs/resources.md``)::

    resources:
      - name: box            # unique; the id is derived from it unless ``id`` is given
        kind: docker         # local | docker | ssh | slurm
        image: local/debian-py:base
        users: [alice]       # who may use it (default: everyone)
    pools:
      - name: anywhere
        resources: [box, laptop]
    apps:                    # application alias -> resources (or pools) it may run on
      word-count: [box, anywhere]

Every resource and pool has a 24-hex id, like Everest's. The resource named ``local`` (kind
``local``, this machine, the behaviour without a file) always exists unless the file
declares its own ``local``. A job's ``resources`` (ids or names of resources or pools)
choose where its task runs: the first usable entry, a pool's least busy member. A job
without ``resources`` runs on its app's first bound resource, else on ``local``. An entry
that is unknown, not allowed to the user, or not bound to the app is refused with a 400
naming it (:class:`ResourceError`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from everest_app.errors import BadRequestError

KINDS = ("local", "docker", "ssh", "slurm")
LOCAL = "local"
_HEX24 = re.compile(r"^[0-9a-f]{24}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# values that end up in sbatch options or remote paths: plain words only
_WORD = re.compile(r"^[A-Za-z0-9_.,:@%+=-]{1,128}$")

# The settings each kind accepts, with their types; anything else in the file is an error,
# so a typo is never silently ignored.
_COMMON = {"name": str, "kind": str, "id": str, "description": str, "users": list,
           "slots": int}
_SSH = {"host": str, "port": int, "user": str, "key": str, "host_keys": list,
        "known_hosts": str, "workdir": str, "python": str}
_OPTIONS: dict[str, dict[str, type]] = {
    "local": {},
    "docker": {"image": str, "images": list, "docker_host": str, "memory": str, "cpus": float,
               "network": str, "uid": str, "pids_limit": int},
    "ssh": _SSH,
    "slurm": {"partition": str, "account": str, "qos": str, "max_time": int,
              "run_as": str, "workdir": str, "login": dict, "poll_interval": float},
}
NETWORKS = ("none", "host")


class ResourceError(BadRequestError):
    """A job names a resource it cannot use (400, message names the resource)."""


def resource_id(kind: str, name: str) -> str:
    """The stable 24-hex id of a resource or pool named ``name``."""
    return hashlib.sha1(f"{kind}:{name}".encode()).hexdigest()[:24]


@dataclass
class Resource:
    """One declared resource; ``options`` are its kind's settings, checked on load."""

    name: str
    kind: str
    id: str
    description: str = ""
    users: list[str] | None = None
    slots: int = 4
    options: dict[str, Any] = field(default_factory=dict)

    def allows(self, user: str) -> bool:
        return self.users is None or user in self.users

    def public(self) -> dict[str, Any]:
        """What ``GET /api/resources`` shows: nothing secret (no keys, hosts or users)."""
        data: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.kind,
                                "description": self.description, "slots": self.slots}
        if self.kind == "docker":
            data["image"] = self.options.get("image")
        if self.kind == "slurm" and self.options.get("partition"):
            data["partition"] = self.options["partition"]
        return data


@dataclass
class Pool:
    """A named group of resources; a job naming it runs on its least busy member."""

    name: str
    id: str
    members: list[str]
    description: str = ""
    users: list[str] | None = None

    def allows(self, user: str) -> bool:
        return self.users is None or user in self.users

    def public(self, resources: dict[str, Resource]) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": "pool",
                "description": self.description,
                "resources": [resources[m].id for m in self.members]}


class Resources:
    """The declared resources and pools, and the app bindings (see the module docstring)."""

    def __init__(self, resources: Iterable[Resource] = (), pools: Iterable[Pool] = (),
                 apps: dict[str, list[str]] | None = None):
        self.by_name: dict[str, Resource] = {}
        for res in resources:
            self.by_name[res.name] = res
        if LOCAL not in self.by_name:
            self.by_name[LOCAL] = Resource(LOCAL, "local", resource_id("resource", LOCAL),
                                           "this machine (the server's own processes)")
        self.pools: dict[str, Pool] = {p.name: p for p in pools}
        self.apps = apps or {}
        self.by_id: dict[str, Resource | Pool] = {r.id: r for r in self.by_name.values()}
        for pool in self.pools.values():
            if pool.id in self.by_id or pool.name in self.by_name:
                raise ValueError(f"pool {pool.name!r}: a resource has that name or id")
            self.by_id[pool.id] = pool
        for pool in self.pools.values():
            for member in pool.members:
                if member not in self.by_name:
                    raise ValueError(f"pool {pool.name!r}: no resource {member!r}")
        for alias, refs in self.apps.items():
            for ref in refs:
                if self._lookup(ref) is None:
                    raise ValueError(f"apps: {alias!r} is bound to unknown resource {ref!r}")

    @classmethod
    def load(cls, path: str | Path | None) -> Resources:
        """Read a resources file; raise ``ValueError`` saying what is wrong and where."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with 'resources', 'pools', 'apps'")
        unknown = set(data) - {"resources", "pools", "apps"}
        if unknown:
            raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
        resources = [_resource(entry, path.parent) for entry in _list(data, "resources")]
        names = [r.name for r in resources]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: resource names must be unique")
        pools = [_pool(entry) for entry in _list(data, "pools")]
        apps = data.get("apps") or {}
        if not isinstance(apps, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v)
                for v in apps.values()):
            raise ValueError(f"{path}: 'apps' maps an app alias to a list of resource names")
        try:
            return cls(resources, pools, {str(k): list(v) for k, v in apps.items()})
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def _lookup(self, ref: str) -> Resource | Pool | None:
        if _HEX24.match(ref) and ref in self.by_id:
            return self.by_id[ref]
        return self.by_name.get(ref) or self.pools.get(ref)

    def visible(self, user: str, alias: str | None = None) -> list[dict[str, Any]]:
        """The resources and pools ``user`` may use (for app ``alias``, if given), as the
        API lists them."""
        usable = self.for_app(user, alias) if alias is not None else None
        out = [r.public() for r in self.by_name.values()
               if r.allows(user) and (usable is None or r in usable)]
        out += [p.public(self.by_name) for p in self.pools.values() if p.allows(user) and (
            usable is None or any(self.by_name[m] in usable for m in p.members))]
        return out

    def get_visible(self, user: str, ref: str) -> dict[str, Any] | None:
        found = self._lookup(ref)
        if found is None or not found.allows(user):
            return None
        return found.public(self.by_name) if isinstance(found, Pool) else found.public()

    def for_app(self, user: str, alias: str) -> list[Resource]:
        """The resources a job of app ``alias`` by ``user`` may run on, in binding order."""
        bound = self.apps.get(alias)
        refs = bound if bound is not None else list(self.by_name)
        out: list[Resource] = []
        for ref in refs:
            for res in self._members(self._lookup(ref)):
                if res.allows(user) and res not in out:
                    out.append(res)
        return out

    def _members(self, found: Resource | Pool | None) -> list[Resource]:
        if isinstance(found, Pool):
            return [self.by_name[m] for m in found.members]
        return [found] if found is not None else []

    def check(self, user: str, alias: str, refs: list[Any] | None) -> list[str]:
        """Validate a job's ``resources``; return them as resource/pool ids.

        Raises :class:`ResourceError` naming the first entry that is not a string, unknown,
        not allowed to ``user`` or not bound to the app, or when ``user`` may use none of
        the app's resources.
        """
        allowed = self.for_app(user, alias)
        if not allowed:
            raise ResourceError(f"no resource you may use runs application {alias!r}",
                                status=400)
        if not refs:
            return []
        ids = []
        for ref in refs:
            if not isinstance(ref, str):
                raise ResourceError(f"resource {ref!r}: resources are ids or names", status=400)
            found = self._lookup(ref)
            if found is None or not found.allows(user):
                raise ResourceError(f"no resource {ref!r} available to you", status=400)
            members = [m for m in self._members(found) if m.allows(user)]
            if not any(m in allowed for m in members):
                raise ResourceError(f"resource {ref!r} may not run application {alias!r}",
                                    status=400)
            ids.append(found.id)
        return ids

    def choose(self, user: str, alias: str, ids: list[str] | None,
               load: Callable[[Resource], int]) -> Resource:
        """Where a job runs: its first entry (a pool's least loaded usable member), else
        the app's first bound resource, else ``local``. ``load(resource)`` counts the
        tasks queued and running there."""
        allowed = self.for_app(user, alias)
        for ref in ids or []:
            members = [m for m in self._members(self._lookup(ref)) if m in allowed]
            if members:
                return min(members, key=load)  # min keeps the first of equals
        local = self.by_name[LOCAL]
        if allowed and (alias in self.apps or local not in allowed):
            return allowed[0]
        return local  # (check() refuses jobs with nowhere to run)

    def get(self, ident: str) -> Resource | None:
        """A resource by id or name (for the executor: tasks record the id)."""
        found = self._lookup(ident)
        return found if isinstance(found, Resource) else None


def _list(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"'{key}' must be a list of mappings")
    return value


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: {key!r} must be a list of strings")
        return value
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: {key!r} must be of type {kind.__name__}")
    return value


def _resource(entry: dict[str, Any], base: Path) -> Resource:
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"resource {name!r}: a name of letters, digits, '.', '_', '-' is "
                         "required")
    where = f"resource {name!r}"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
    allowed = {**_COMMON, **_OPTIONS[kind]}
    unknown = set(entry) - set(allowed)
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)} for kind {kind}")
    values = {k: _typed(where, k, v, allowed[k]) for k, v in entry.items()}
    rid = values.get("id") or resource_id("resource", name)
    if not _HEX24.match(rid):
        raise ValueError(f"{where}: id must be 24 lowercase hex digits")
    options = {k: v for k, v in values.items() if k not in _COMMON}
    _check_kind(where, kind, options, base)
    slots = values.get("slots", 4)
    if slots < 1:
        raise ValueError(f"{where}: slots must be at least 1")
    return Resource(name, kind, rid, values.get("description", ""), values.get("users"),
                    slots, options)


def _check_kind(where: str, kind: str, options: dict[str, Any], base: Path) -> None:
    for key in ("key", "known_hosts"):
        if key in options:
            options[key] = str((base / Path(options[key]).expanduser()).resolve())
    if kind == "docker":
        if not options.get("image"):
            raise ValueError(f"{where}: 'image' is required for docker")
        if options.setdefault("network", "none") not in NETWORKS:
            raise ValueError(f"{where}: network must be one of {', '.join(NETWORKS)}")
        uid = options.setdefault("uid", "65534:65534")
        if not re.fullmatch(r"[1-9]\d*(:\d+)?", uid):
            raise ValueError(f"{where}: uid must be a non-root 'uid[:gid]'")
    if kind == "ssh":
        _check_ssh(where, options)
    if kind == "slurm":
        for key in ("partition", "account", "qos", "run_as"):
            if key in options and not _WORD.match(options[key]):
                raise ValueError(f"{where}: {key} {options[key]!r} is not a plain word")
        login = options.get("login")
        if login is None and not options.get("workdir"):
            raise ValueError(f"{where}: 'workdir' (a folder the compute nodes share) is "
                             "required unless jobs are submitted through 'login'")
        if login is not None:
            extra = set(login) - set(_SSH)
            if extra:
                raise ValueError(f"{where}: unknown login settings {sorted(extra)}")
            for key, value in login.items():
                login[key] = _typed(f"{where} login", key, value, _SSH[key])
            _check_kind(f"{where} login", "ssh", login, base)


def _check_ssh(where: str, options: dict[str, Any]) -> None:
    if not options.get("host") or not options.get("user"):
        raise ValueError(f"{where}: 'host' and 'user' are required for ssh")
    if not options.get("host_keys") and not options.get("known_hosts"):
        raise ValueError(f"{where}: pin the host key with 'host_keys' or 'known_hosts' "
                         "(host keys are never trusted on first use)")
    if options.get("user") == "root":
        raise ValueError(f"{where}: tasks do not run as root; log in as another user")


def _pool(entry: dict[str, Any]) -> Pool:
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"pool {name!r}: a name of letters, digits, '.', '_', '-' is required")
    unknown = set(entry) - {"name", "id", "resources", "description", "users"}
    if unknown:
        raise ValueError(f"pool {name!r}: unknown settings {sorted(unknown)}")
    members = _typed(f"pool {name!r}", "resources", entry.get("resources") or [], list)
    if not members:
        raise ValueError(f"pool {name!r}: 'resources' lists at least one resource")
    pid = entry.get("id") or resource_id("pool", name)
    if not isinstance(pid, str) or not _HEX24.match(pid):
        raise ValueError(f"pool {name!r}: id must be 24 lowercase hex digits")
    users = entry.get("users")
    if users is not None:
        users = _typed(f"pool {name!r}", "users", users, list)
    return Pool(name, pid, members, str(entry.get("description", "")), users)
