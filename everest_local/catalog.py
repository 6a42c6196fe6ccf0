"""The applications the local server offers, addressable by id, ``owner/alias`` or alias.

Every application gets the owner :data:`OWNER` and a stable 24-hex id derived from
``owner/alias`` (so ids survive restarts and match across machines). Besides Everest's
two forms (id, ``owner/alias``) a bare alias is accepted too — a local convenience.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from everest_app.apps import builtin_app_dirs
from everest_app.descriptor import Application, load

log = logging.getLogger(__name__)

OWNER = "local"
_HEX24 = re.compile(r"^[0-9a-f]{24}$")


def app_id(owner: str, alias: str) -> str:
    """The stable id of ``owner/alias``."""
    return hashlib.sha1(f"{owner}/{alias}".encode()).hexdigest()[:24]


class Catalog:
    """Applications by id; later loads of the same alias replace earlier ones."""

    def __init__(self) -> None:
        self.apps: dict[str, Application] = {}
        self.owner_of: dict[str, str] = {}

    @classmethod
    def with_builtins(cls, extra: Iterable[str | os.PathLike] = ()) -> Catalog:
        """The shipped applications, then ``extra`` (folders, application.json, zips).

        A path that is a folder of application folders loads each of them. Raises
        ``everest_app.descriptor.DescriptorError``/``FileNotFoundError`` for a bad path:
        a server started with a broken ``--apps`` should say so, not run without it.
        """
        catalog = cls()
        for path in builtin_app_dirs():
            catalog.add(load(path))
        for path in extra:
            for app in _load_all(Path(path)):
                catalog.add(app)
        return catalog

    def add(self, app: Application, owner: str = OWNER) -> str:
        key = app_id(owner, app.alias)
        if key in self.apps:
            log.warning("application %s/%s from %s replaces the one from %s", owner, app.alias,
                        app.source, self.apps[key].source)
        self.apps[key] = app
        self.owner_of[key] = owner
        return key

    def find(self, ref: str) -> tuple[str, Application] | None:
        """Look up ``ref`` (id, ``owner/alias`` or alias); None when unknown."""
        ref = ref.strip("/")
        if _HEX24.match(ref) and ref in self.apps:
            return ref, self.apps[ref]
        if "/" in ref:
            owner, _, alias = ref.partition("/")
            key = app_id(owner, alias)
        else:
            key = app_id(OWNER, ref)
        app = self.apps.get(key)
        return (key, app) if app else None

    def summary(self, key: str, job_count: int = 0) -> dict[str, Any]:
        """What ``GET /api/apps`` lists for one application."""
        app = self.apps[key]
        return {"id": key, "alias": app.alias, "owner": self.owner_of[key], "name": app.name,
                "annotation": app.annotation, "keywords": list(app.keywords),
                "version": app.version, "jobs": job_count}

    def description(self, key: str) -> dict[str, Any]:
        """What ``GET /api/apps/<id>`` returns: application.json plus id and owner."""
        data = self.apps[key].to_dict()
        return {"id": key, "owner": self.owner_of[key], **data}


def _load_all(path: Path) -> list[Application]:
    if path.is_dir() and not (path / "application.json").exists():
        children = sorted(p for p in path.iterdir()
                          if (p / "application.json").is_file() or p.suffix == ".zip")
        if not children:
            raise FileNotFoundError(f"{path}: no application.json, export zip or app folders")
        return [load(p) for p in children]
    return [load(path)]
