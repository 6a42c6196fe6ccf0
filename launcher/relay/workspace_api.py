"""The relay's REST API for workspaces: list, history, download, upload, delete.

Users authenticate as for sessions (an Everest token as ``Authorization: Bearer``, or the
page's cookie). A workspace name may hold ``/`` (a hub's ``<user>/<server>``): it travels as
one percent-encoded path segment (``alice%2Fgpu``).

- ``GET /api/workspaces`` -> ``{"workspaces": [...], "usage": bytes, "quota": bytes}``;
- ``GET /api/workspaces/<name>`` -> the workspace and its ``snapshots`` (history, newest
  first);
- ``GET /api/workspaces/<name>/zip[?snapshot=ID]`` -> the workspace (its latest saved state,
  or that snapshot) as a zip; links stay links;
- ``PUT /api/workspaces/<name>`` with a zip as the body -> 201 the snapshot the upload made
  (the workspace's content is replaced, its history kept);
- ``POST /api/workspaces/<name>/files`` ``multipart/form-data``, each file part's file name
  its path inside the workspace -> 201 the snapshot (the workspace's files are replaced by
  these);
- ``DELETE /api/workspaces/<name>`` -> 200; 409 while a live session writes it.

Another user's workspace is the same 404 as one that does not exist; a refused name or path
(``..``, absolute, NUL) 400; the quota or the per-file limit 413; a workspace a live session
writes 409 naming it. Every error is ``{"message"}``. The description is
``GET /api/openapi.json`` (:mod:`launcher.relay.openapi`).
"""

from __future__ import annotations

import asyncio
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from tornado import httputil, web

from launcher.relay.handlers import ApiError, BaseHandler
from launcher.relay.workspaces import (
    BadName,
    WorkspaceError,
    check_name,
    check_relative_path,
)

NAME = r"([^/]+)"
"""A workspace name in a route: one (percent-encoded) path segment."""
_SPOOL = 8 << 20  # uploads and downloads bigger than this go through a temporary file
_MULTIPART_MAX = 512 << 20
T = TypeVar("T")


class WorkspaceHandler(BaseHandler):
    """Common ground: the caller's identity, store calls off the event loop, errors."""

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` of the store in a worker thread; its refusals as API errors."""
        store = self.relay.workspaces
        if store is None:
            raise ApiError(503, "this relay keeps no workspaces")
        try:
            return await asyncio.get_running_loop().run_in_executor(None, func, *args)
        except WorkspaceError as exc:
            raise ApiError(exc.status, exc.message) from None

    def name(self, raw: str) -> str:
        try:
            return check_name(raw)
        except BadName as exc:
            raise ApiError(400, exc.message) from None


class WorkspacesHandler(WorkspaceHandler):
    async def get(self) -> None:
        owner = await self.owner()
        store = self.relay.workspaces
        found = await self.call(store.list, owner)
        usage = await self.call(store.usage, owner)
        self.send({"workspaces": [w.to_json() for w in found], "usage": usage,
                   "quota": store.quota or None})


@web.stream_request_body
class OneWorkspaceHandler(WorkspaceHandler):
    """``/api/workspaces/<name>``: GET (with history), PUT (a zip), DELETE."""

    async def prepare(self) -> None:
        self.owner_name = await self.owner()
        self.body_file: Any = None
        if self.request.method == "PUT":
            self.request.connection.set_max_body_size(self.relay.config.max_proxied_body)
            self.body_file = tempfile.SpooledTemporaryFile(_SPOOL)

    def data_received(self, chunk: bytes) -> None:
        if self.body_file is not None:
            self.body_file.write(chunk)

    def on_finish(self) -> None:
        if self.body_file is not None:
            self.body_file.close()

    async def get(self, raw: str) -> None:
        name, store = self.name(raw), self.relay.workspaces
        info = await self.call(store.info, self.owner_name, name)
        snaps = await self.call(store.snapshots, self.owner_name, name)
        self.send({**info.to_json(), "snapshots": [s.to_json() for s in snaps]})

    async def put(self, raw: str) -> None:
        name = self.name(raw)
        self.body_file.seek(0)
        if not zipfile.is_zipfile(self.body_file):
            raise ApiError(400, "the body must be a zip file (or POST the files as "
                                "multipart/form-data to .../files)")
        self.body_file.seek(0)
        snap = await self.call(self.relay.workspaces.import_files, self.owner_name, name,
                               self.body_file)
        self.send(snap.to_json(), 201)

    async def delete(self, raw: str) -> None:
        name = self.name(raw)
        await self.call(self.relay.workspaces.delete, self.owner_name, name)
        self.send({"name": name, "deleted": True})


class WorkspaceZipHandler(WorkspaceHandler):
    """``/api/workspaces/<name>/zip[?snapshot=ID]``: the download."""

    async def get(self, raw: str) -> None:
        owner = await self.owner()
        name, store = self.name(raw), self.relay.workspaces
        snapshot = self.get_query_argument("snapshot", None) or None
        with tempfile.SpooledTemporaryFile(_SPOOL) as out:
            await self.call(store.write_zip, owner, name, snapshot, out)
            size = out.tell()
            out.seek(0)
            filename = (name.replace("/", "-") + (f"-{snapshot}" if snapshot else "")
                        + ".zip")
            self.set_header("Content-Type", "application/zip")
            self.set_header("Content-Length", str(size))
            self.set_header("Content-Disposition",
                            f"attachment; filename*=UTF-8''{quote(filename, safe='')}")
            while chunk := out.read(1 << 20):
                self.write(chunk)
                await self.flush()
        self.finish()


class WorkspaceFilesHandler(WorkspaceHandler):
    """``POST /api/workspaces/<name>/files``: files as multipart parts, named by path."""

    async def post(self, raw: str) -> None:
        owner = await self.owner()
        name = self.name(raw)
        if len(self.request.body) > _MULTIPART_MAX:
            raise ApiError(413, f"send at most {_MULTIPART_MAX} bytes this way; PUT a zip "
                                "for more")
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""),
                                      self.request.body, args, files)
        parts = [f for group in files.values() for f in group]
        if not parts:
            raise ApiError(400, "no files: send multipart/form-data parts with file names "
                                "(their paths inside the workspace)")
        with tempfile.SpooledTemporaryFile(_SPOOL) as packed:
            with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zf:
                seen: set[str] = set()
                for part in parts:
                    try:
                        path = "/".join(check_relative_path(part.filename))
                    except BadName as exc:
                        raise ApiError(400, exc.message) from None
                    if path in seen:
                        raise ApiError(400, f"{path!r} is sent twice")
                    seen.add(path)
                    zf.writestr(path, part.body)
            packed.seek(0)
            snap = await self.call(self.relay.workspaces.import_files, owner, name, packed)
        self.send(snap.to_json(), 201)


def routes() -> list[tuple[str, type]]:
    """The workspace routes, for :func:`launcher.relay.app.make_app`."""
    return [
        (r"/api/workspaces", WorkspacesHandler),
        (rf"/api/workspaces/{NAME}", OneWorkspaceHandler),
        (rf"/api/workspaces/{NAME}/zip", WorkspaceZipHandler),
        (rf"/api/workspaces/{NAME}/files", WorkspaceFilesHandler),
    ]


def encoded(name: str) -> str:
    """``name`` as the one path segment the routes take."""
    return quote(name, safe="")
